"""Telemetry costs: what the request path pays (`record`) and what the background pays per batch.

Per-record figures are the batch figures divided by BATCH. The Python-protobuf variant builds
the same two spans per request with the `opentelemetry-proto` classes (upb): the alternative
that Rust encoding replaced.
"""

from __future__ import annotations

import logging
import os

import msgspec
import pytest

from tollway.engine import RecordBatch, SpanEncoder
from tollway.telemetry import Attempt, Record, Telemetry, TelemetrySettings
from tollway.telemetry.accesslog import AccessLog
from tollway.telemetry.metrics import MetricsStore

BATCH = 256


def make_record(i: int) -> Record:
    return Record(
        request_id=f"req-{i:08d}",
        start_ns=1_700_000_000_000_000_000 + i,
        end_ns=1_700_000_000_120_000_000 + i,
        key_name="alice-laptop",
        subject="user:alice",
        model="prod/engineering-assistant",
        rule_ids=["lb-1", "rl-1"],
        metadata={"team": f"team-{i % 5}", "env": "prod"},
        attempts=[
            Attempt(
                target="openai/gpt-4o-mini",
                provider="openai",
                request_model="gpt-4o-mini",
                start_ns=1_700_000_000_001_000_000 + i,
                end_ns=1_700_000_000_119_000_000 + i,
                status=200,
                response_model="gpt-4o-mini-2024-07-18",
                response_id="chatcmpl-0123456789abcdef",
                input_tokens=120,
                output_tokens=25,
                finish_reasons=["stop"],
                ttft_ms=18.5,
                itl_mean_ms=1.2,
                itl_max_ms=4.0,
                cost_usd=0.000033,
                temperature=0.2,
                max_tokens=256,
            )
        ],
        rate_limit=("rl-1", "allowed"),
        routing_rule="lb-1",
    )


RECORDS = [make_record(i) for i in range(BATCH)]


def test_request_path_record(benchmark: pytest.FixtureDef[None]) -> None:
    """A record made in Python (an MCP request's): its MessagePack and one bounded append.
    A proxied request's record is composed by the core (`request_record`), measured with the
    whole request path in test_bench_request_path.py."""
    tel = Telemetry(
        TelemetrySettings.from_config({"queue_size": 10**9, "batch_size": 10**9}, None, {})
    )
    rec = RECORDS[0]
    benchmark(tel.record, rec)


def test_python_record_build(benchmark: pytest.FixtureDef[None]) -> None:
    """Building one `Record` in Python (MCP requests), the input of the above."""
    benchmark(make_record, 1)


def test_background_encode_batch_rust(benchmark: pytest.FixtureDef[None]) -> None:
    """Encoding a batch once (msgspec), decoding it once (core), queueing it and building and
    encoding its spans."""
    enc = SpanEncoder("tollway", [("env", "prod")], True, "proto", BATCH)
    encode = msgspec.msgpack.Encoder().encode

    def run() -> None:
        enc.push(RecordBatch(encode(RECORDS)))
        enc.encode_next(BATCH)

    benchmark(run)


def test_background_metrics_and_access_log_batch(benchmark: pytest.FixtureDef[None]) -> None:
    """The metrics and the access-log lines of a batch (one fold in the core), logged."""
    logger = logging.getLogger("bench.access")
    logger.propagate = False
    logger.addHandler(logging.StreamHandler(open(os.devnull, "w")))  # noqa: SIM115
    logger.setLevel(logging.INFO)
    log = AccessLog(logging.INFO, logger)
    store = MetricsStore(["team"], 100)
    encode = msgspec.msgpack.Encoder().encode

    def run() -> None:
        log.emit(store.fold(RecordBatch(encode(RECORDS)), log.enabled))

    benchmark(run)


def test_background_encode_batch_python_protobuf(benchmark: pytest.FixtureDef[None]) -> None:
    trace_pb2 = pytest.importorskip("opentelemetry.proto.trace.v1.trace_pb2")
    common = pytest.importorskip("opentelemetry.proto.common.v1.common_pb2")
    svc = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    kv, av = common.KeyValue, common.AnyValue

    def s(k: str, v: str) -> object:
        return kv(key=k, value=av(string_value=v))

    def n(k: str, v: int) -> object:
        return kv(key=k, value=av(int_value=v))

    def f(k: str, v: float) -> object:
        return kv(key=k, value=av(double_value=v))

    def run() -> None:
        spans = []
        for r in RECORDS:
            tid, sid = os.urandom(16), os.urandom(8)
            root = [s("http.route", r.route), n("http.response.status_code", r.status),
                    s("tollway.key.name", r.key_name), s("tollway.subject", r.subject)]  # fmt: skip
            root += [s(f"tollway.metadata.{k}", v) for k, v in r.metadata.items()]
            spans.append(trace_pb2.Span(trace_id=tid, span_id=sid, name="POST /v1/chat/completions",
                         kind=2, start_time_unix_nano=r.start_ns, end_time_unix_nano=r.end_ns,
                         attributes=root))  # fmt: skip
            for a in r.attempts:
                attrs = [s("gen_ai.operation.name", "chat"), s("gen_ai.provider.name", a.provider),
                         s("gen_ai.request.model", a.request_model),
                         s("gen_ai.response.model", a.response_model),
                         s("gen_ai.response.id", a.response_id),
                         n("gen_ai.usage.input_tokens", a.input_tokens or 0),
                         n("gen_ai.usage.output_tokens", a.output_tokens or 0),
                         f("gen_ai.request.temperature", a.temperature or 0.0),
                         n("gen_ai.request.max_tokens", a.max_tokens or 0),
                         f("tollway.ttft_ms", a.ttft_ms or 0.0), f("tollway.itl_ms", 1.0),
                         f("tollway.cost_usd", a.cost_usd or 0.0)]  # fmt: skip
                spans.append(trace_pb2.Span(trace_id=tid, span_id=os.urandom(8),
                             parent_span_id=sid, name="chat " + a.request_model, kind=3,
                             start_time_unix_nano=a.start_ns, end_time_unix_nano=a.end_ns,
                             attributes=attrs))  # fmt: skip
        req = svc.ExportTraceServiceRequest(
            resource_spans=[
                trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=spans)])
            ]
        )
        req.SerializeToString()

    benchmark(run)
