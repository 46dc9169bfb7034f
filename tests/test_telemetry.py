"""Telemetry package: OTLP export to a real receiver, drops under a dead collector, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.parser import text_string_to_metric_families

from tollway.telemetry import Attempt, Record, Telemetry, TelemetrySettings
from tollway.telemetry.metrics import MetricsStore

SECRET = "Basic c2VjcmV0LXRva2Vu"
PROMPT = "my very private prompt"
ANSWER = "the confidential answer"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


class Receiver:
    """An OTLP/HTTP collector on a free loopback port: `mode` is ok, 503 or hang."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.refused = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "503":
            self.refused += 1
            return web.Response(status=503)
        self.requests.append((dict(request.headers), body))
        return web.Response(body=b"", content_type="application/x-protobuf")

    def spans(self) -> list[tuple[ExportTraceServiceRequest, Span]]:
        out = []
        for _, body in self.requests:
            req = ExportTraceServiceRequest.FromString(body)
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    out.extend((req, span) for span in ss.spans)
        return out


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", rx.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rx.url = f"http://127.0.0.1:{port}/v1/traces"
    try:
        yield rx
    finally:
        await runner.cleanup()


def settings(url: str | None, **otel: Any) -> TelemetrySettings:
    base: dict[str, Any] = {
        "traces_endpoint": url,
        "headers": {"Authorization": SECRET, "Langsmith-Project": "gw-tests"},
        "resource_attributes": {"env": "prod", "tenant_id": "t-1"},
        "service_name": "edge-gateway",
        "schedule_delay_ms": 10,
    }
    metrics = {"metadata_logging_keys": ["team"], "metadata_value_cap": 2}
    return TelemetrySettings.from_config({**base, **otel}, metrics, {})


def record(i: int = 0, *, traceparent: str = "", team: str = "search", text: bool = True) -> Record:
    first = Attempt(
        target="azure/gpt-4o",
        provider="azure-openai",
        request_model="gpt-4o",
        start_ns=1_000 + i,
        end_ns=2_000 + i,
        status=503,
        error_type="503",
        attempt=1,
    )
    second = Attempt(
        target="openai/gpt-4o",
        provider="openai",
        request_model="gpt-4o",
        start_ns=2_100 + i,
        end_ns=9_000 + i,
        status=200,
        response_model="gpt-4o-2024-08-06",
        response_id=f"chatcmpl-{i}",
        input_tokens=12,
        output_tokens=34,
        finish_reasons=["stop"],
        ttft_ms=20.0,
        itl_mean_ms=1.5,
        itl_max_ms=6.0,
        cost_usd=0.002,
        attempt=2,
        fallback_reason="503",
        temperature=0.2,
        max_tokens=256,
        top_p=0.9,
        stream=True,
        input_messages=json.dumps([{"role": "user", "content": PROMPT}]) if text else None,
        output_text=ANSWER if text else None,
    )
    return Record(
        request_id=f"req-{i}",
        start_ns=1_000 + i,
        end_ns=10_000_000 + i,
        status=200,
        key_name="alice-laptop",
        subject="user:alice",
        model="gpt-4o",
        rule_ids=["lb-gpt", "rl-alice"],
        metadata={"team": team},
        traceparent=traceparent,
        attempts=[first, second],
        rate_limit=("rl-alice", "allowed"),
        budget=("budget-team", "allowed"),
        routing_rule="lb-gpt",
    )


def attrs(span: Span) -> dict[str, Any]:
    def value(v: AnyValue) -> Any:
        kind = v.WhichOneof("value")
        if kind == "array_value":
            return [value(x) for x in v.array_value.values]
        return getattr(v, kind) if kind else None

    return {kv.key: value(kv.value) for kv in span.attributes}


async def wait_for(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not cond():  # noqa: ASYNC110 - polling counters owned by the code under test
            await asyncio.sleep(0.01)


def test_spans_arrive_with_genai_attributes_parentage_resource_and_auth_header() -> None:
    async def run() -> Receiver:
        async with receiver() as rx, aiohttp.ClientSession() as session:
            tel = Telemetry(settings(rx.url, exclude_request_data=False))  # content opt-in
            await tel.start(session)
            tel.record(record(1, traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01"))
            tel.record(record(2))
            await tel.stop(timeout_s=5)
            # Per request: the root, two attempts, and the policy steps (rate limit, budget,
            # load balancing, one fallback).
            assert tel.spans_exported == 14
            return rx

    rx = asyncio.run(run())
    headers = rx.requests[0][0]
    assert headers["Authorization"] == SECRET
    assert headers["Langsmith-Project"] == "gw-tests"
    assert headers["Content-Type"] == "application/x-protobuf"
    spans = rx.spans()
    req = spans[0][0]
    resource = {kv.key: kv.value.string_value for kv in req.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "edge-gateway"
    assert resource["env"] == "prod" and resource["tenant_id"] == "t-1"

    by_trace: dict[bytes, list[Span]] = {}
    for _, span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    assert len(by_trace) == 2
    caller = by_trace[bytes.fromhex(TRACE_ID)]
    (root,) = [s for s in caller if s.kind == Span.SPAN_KIND_SERVER]
    first, second = [s for s in caller if s.kind == Span.SPAN_KIND_CLIENT]
    policy = {s.name: attrs(s) for s in caller if s.kind == Span.SPAN_KIND_INTERNAL}
    assert set(policy) == {
        "rate_limit rl-alice",
        "budget budget-team",
        "load_balance lb-gpt",
        "fallback openai/gpt-4o",
    }
    assert policy["fallback openai/gpt-4o"]["tollway.fallback.from"] == "azure/gpt-4o"
    assert all(s.parent_span_id == root.span_id for s in caller if s is not root)
    assert root.kind == Span.SPAN_KIND_SERVER
    assert root.name == "POST /v1/chat/completions"
    assert root.parent_span_id == bytes.fromhex(PARENT_ID)
    ra = attrs(root)
    assert ra["tollway.key.name"] == "alice-laptop"
    assert ra["tollway.subject"] == "user:alice"
    assert ra["tollway.rule_ids"] == ["lb-gpt", "rl-alice"]
    assert ra["tollway.metadata.team"] == "search"
    assert ra["http.response.status_code"] == 200
    for child in (first, second):
        assert child.kind == Span.SPAN_KIND_CLIENT
        assert child.name == "chat gpt-4o"
        assert child.parent_span_id == root.span_id
    a1, a2 = attrs(first), attrs(second)
    assert a1["gen_ai.provider.name"] == "azure.ai.openai"
    assert a1["error.type"] == "503"
    assert first.status.code == first.status.STATUS_CODE_ERROR
    assert a2["gen_ai.operation.name"] == "chat"
    assert a2["gen_ai.provider.name"] == "openai"
    assert a2["gen_ai.request.model"] == "gpt-4o"
    assert a2["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert a2["gen_ai.response.id"] == "chatcmpl-1"
    assert a2["gen_ai.usage.input_tokens"] == 12
    assert a2["gen_ai.usage.output_tokens"] == 34
    assert a2["gen_ai.response.finish_reasons"] == ["stop"]
    assert a2["gen_ai.request.temperature"] == 0.2
    assert a2["gen_ai.request.max_tokens"] == 256
    assert a2["gen_ai.request.top_p"] == 0.9
    assert a2["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.02)
    assert a2["tollway.ttft_ms"] == 20.0 and a2["tollway.itl_ms"] == 1.5
    assert a2["tollway.cost_usd"] == 0.002
    assert a2["tollway.attempt"] == 2 and a2["tollway.fallback_reason"] == "503"
    assert PROMPT in a2["gen_ai.input.messages"]
    assert ANSWER in a2["gen_ai.output.messages"]
    other_root = next(s for s in by_trace[next(t for t in by_trace if t != root.trace_id)])
    assert other_root.parent_span_id == b""


def test_excluded_request_data_leaves_no_prompt_or_answer_in_any_export() -> None:
    async def run() -> tuple[Receiver, bool]:
        async with receiver() as rx, aiohttp.ClientSession() as session:
            for encoding in ("proto", "json"):
                tel = Telemetry(settings(rx.url, exclude_request_data=True, encoding=encoding))
                await tel.start(session)
                # Even a record that carries text by mistake must not leak it.
                tel.record(record(1))
                await tel.stop(timeout_s=5)
            return rx, tel.capture_content

    rx, capture = asyncio.run(run())
    assert capture is False
    assert len(rx.requests) == 2
    assert rx.requests[1][0]["Content-Type"] == "application/json"
    doc = json.loads(rx.requests[1][1])
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][1]
    assert span["name"] == "chat gpt-4o" and len(span["traceId"]) == 32
    for _, body in rx.requests:
        assert PROMPT.encode() not in body and ANSWER.encode() not in body
        assert b"gen_ai.input.messages" not in body


def test_a_failing_collector_costs_requests_nothing_drops_are_counted_and_export_resumes() -> None:
    async def run() -> None:
        async with receiver() as rx, aiohttp.ClientSession() as session:
            rx.mode = "503"
            tel = Telemetry(
                settings(rx.url, queue_size=10, batch_size=5, export_timeout_ms=200),
                retry_initial_s=0.01,
                retry_max_s=0.05,
                max_retries=3,
            )
            await tel.start(session)
            for i in range(50):
                tel.record(record(i))  # synchronous: nothing to await on the request path
                if i % 10 == 9:
                    await asyncio.sleep(0.02)  # let the background run, as a server would
            await wait_for(lambda: rx.refused > 0 and tel.spans_dropped > 0)
            assert tel.spans_exported == 0
            text = (await tel.render()).decode()
            dropped = {
                s.labels["reason"]: s.value
                for f in text_string_to_metric_families(text)
                if f.name == "llm_gateway_span_dropped"
                for s in f.samples
            }
            assert sum(dropped.values()) == tel.spans_dropped > 0
            # Metrics stay exact while spans are dropped.
            assert _sample(text, "llm_gateway_requests_total") == 50

            rx.mode = "ok"
            for i in range(5):
                tel.record(record(100 + i))
            await wait_for(lambda: tel.spans_exported > 0)
            await tel.stop(timeout_s=2)

    asyncio.run(run())


def test_stop_is_bounded_when_the_collector_hangs() -> None:
    async def run() -> Telemetry:
        async with receiver() as rx, aiohttp.ClientSession() as session:
            rx.mode = "hang"
            tel = Telemetry(settings(rx.url, export_timeout_ms=60_000))
            await tel.start(session)
            for i in range(50):
                tel.record(record(i))
            await asyncio.sleep(0.05)  # the sender is now stuck in a POST
            await asyncio.wait_for(tel.stop(timeout_s=0.2), timeout=5)
            return tel

    tel = asyncio.run(run())
    assert tel.spans_exported == 0
    assert tel.spans_dropped == 150


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_metrics_families_labels_and_metadata_cardinality_cap() -> None:
    async def run() -> str:
        tel = Telemetry(settings(None))
        for i, team in enumerate(["search", "ads", "infra", "search", "growth"]):
            tel.record(record(i, team=team))
        return (await tel.render()).decode()

    text = asyncio.run(run())
    families = {f.name for f in text_string_to_metric_families(text)}
    for name in (
        "llm_gateway_requests",
        "llm_gateway_input_tokens",
        "llm_gateway_output_tokens",
        "llm_gateway_request_cost",
        "llm_gateway_request_processing_ms",
        "llm_gateway_first_token_latency_ms",
        "llm_gateway_inter_token_latency_ms",
        "llm_gateway_request_model_inference_failure",
        "llm_gateway_rate_limit_requests",
        "llm_gateway_budget_requests",
        "llm_gateway_load_balanced_requests",
        "llm_gateway_fallback_requests",
        "llm_gateway_span_export",
        "llm_gateway_span_dropped",
    ):
        assert name in families, name
    req = "llm_gateway_requests_total"
    assert _sample(text, req) == 5
    assert _sample(text, req, llm_gateway_metadata_team="search") == 2
    assert _sample(text, req, llm_gateway_metadata_team="ads") == 1
    # The cap is 2 distinct values: later new values are folded into "other".
    assert _sample(text, req, llm_gateway_metadata_team="other") == 2
    labels = {"model_name": "gpt-4o", "target": "openai/gpt-4o", "username": "user:alice"}
    assert _sample(text, req, status="200", **labels) == 5
    assert _sample(text, "llm_gateway_output_tokens", **labels) == 5 * 34
    assert _sample(text, "llm_gateway_request_cost") == pytest.approx(5 * 0.002)
    fail = "llm_gateway_request_model_inference_failure"
    assert _sample(text, fail, target="azure/gpt-4o", status="503", error_type="503") == 5
    assert _sample(text, "llm_gateway_fallback_requests_total", rule="lb-gpt") == 5
    assert _sample(text, "llm_gateway_rate_limit_requests_total", rule="rl-alice") == 5
    assert _sample(text, "llm_gateway_request_processing_ms_count") == 5
    assert _sample(text, "llm_gateway_first_token_latency_ms_bucket", le="25.0") == 5
    assert SECRET not in text


WORKER = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from test_telemetry import record, settings
from tollway.telemetry import Telemetry

async def main():
    tel = Telemetry(settings(None), metrics_dir={dir!r})
    for i in range({n}):
        tel.record(record(i))
    await tel.stop()

asyncio.run(main())
"""


def test_totals_are_summed_over_worker_processes(tmp_path: Path) -> None:
    for n in (3, 4):
        script = WORKER.format(tests=str(Path(__file__).parent), dir=str(tmp_path), n=n)
        subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True, timeout=60)
    assert len(list(tmp_path.glob("worker-*.msgpack"))) == 2
    scraper = MetricsStore(["team"], 2, str(tmp_path))
    scraper.observe(record(99))
    text = scraper.render().decode()
    assert _sample(text, "llm_gateway_requests_total") == 8
    assert _sample(text, "llm_gateway_input_tokens") == 8 * 12
    assert _sample(text, "llm_gateway_request_processing_ms_count") == 8


def test_settings_follow_the_otel_environment_and_config_wins() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20env,x-env=1",
        "OTEL_SERVICE_NAME": "from-env",
        "OTEL_RESOURCE_ATTRIBUTES": "env=staging,region=eu-west-1",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
    }
    s = TelemetrySettings.from_config(None, None, env)
    assert s.traces_endpoint == "http://collector:4318/v1/traces"
    assert dict(s.headers) == {"authorization": "Bearer env", "x-env": "1"}
    assert s.service_name == "from-env" and s.encoding == "json"
    assert dict(s.resource_attributes) == {"env": "staging", "region": "eu-west-1"}

    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://traces:4318/v1/traces"
    otel = {
        "headers": {"Authorization": SECRET},
        "resource_attributes": {"env": "prod"},
        "service_name": "gw",
        "encoding": "proto",
    }
    s = TelemetrySettings.from_config(otel, None, env)
    assert s.traces_endpoint == "http://traces:4318/v1/traces"
    assert dict(s.headers) == {"x-env": "1", "Authorization": SECRET}
    assert dict(s.resource_attributes) == {"region": "eu-west-1", "env": "prod"}
    assert (s.service_name, s.encoding) == ("gw", "proto")
    assert SECRET not in repr(s) and SECRET not in str(s)
    assert TelemetrySettings.from_config(None, None, {}).traces_endpoint is None


def test_truefoundry_variables_metadata_keys_and_metrics_push() -> None:
    env = {
        "ENABLE_OTEL_METRICS": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "Authorization=Bearer tok",
        "LLM_GATEWAY_METADATA_LOGGING_KEYS": '["customer_id", "request-type", "customer_id"]',
        "ENABLE_OTEL_TRACING": "false",
    }
    s = TelemetrySettings.from_config(None, None, env)
    assert s.traces_endpoint is None  # ENABLE_OTEL_TRACING=false
    assert s.metrics_endpoint == "http://collector:4318/v1/metrics"
    assert dict(s.metrics_headers) == {"Authorization": "Bearer tok"}
    assert s.metadata_logging_keys == ("customer_id",)  # not label-safe and repeats skipped
    assert "tok" not in repr(s)
    otel = {"metrics_endpoint": "http://file:4318/v1/metrics", "metrics_export_interval_ms": 500}
    s = TelemetrySettings.from_config(otel, {"metadata_logging_keys": ["team"]}, env)
    assert (s.metrics_endpoint, s.metrics_export_interval_ms) == (
        "http://file:4318/v1/metrics",
        500,
    )
    assert s.metadata_logging_keys == ("team",)
    off = TelemetrySettings.from_config(None, None, {**env, "ENABLE_OTEL_METRICS": "false"})
    assert off.metrics_endpoint is None


def test_access_log_has_one_json_line_per_request_and_no_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def run() -> None:
        tel = Telemetry(settings(None))
        tel.record(record(1))
        tel.record(record(2))
        await tel.stop()

    with caplog.at_level(logging.INFO, logger="tollway.access"):
        asyncio.run(run())
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "tollway.access")
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["request_id"] for line in lines] == ["req-1", "req-2"]
    assert lines[0]["target"] == "openai/gpt-4o" and lines[0]["output_tokens"] == 34
    assert lines[0]["key_name"] == "alice-laptop" and lines[0]["cost_usd"] == 0.002
    assert all(
        PROMPT not in r.getMessage() and SECRET not in r.getMessage() for r in caplog.records
    )
