"""Telemetry end to end: real `tollway serve`, the mock, the `openai` client and an OTLP/HTTP
receiver in the test that decodes the protobuf with the `opentelemetry-proto` classes."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import msgspec
import openai
import pytest
from conftest import (
    CLIENT_KEY,
    LIMITED_KEY,
    PROVIDER_KEY,
    Gateways,
    Server,
    free_port,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.parser import text_string_to_metric_families

# The exporter credential; its base64 part is what a leak would most likely show.
OTLP_TOKEN = "ZTJlLXVzZXI6b3RscC1zZWNyZXQtNDI="
OTLP_AUTH = f"Basic {OTLP_TOKEN}"
PROMPT_WORD = "quokkaplatypus"  # unique: found in a span only if the prompt was exported
ANSWER_TEXT = "deterministic answer from the Tollway"  # what the mock answers
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP collector on a loopback port; each gateway posts to its own path, whose
    `modes` entry is "ok", "503" or "hang" (reads the body and never answers)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.modes: dict[str, str] = {}
        self.received: dict[str, list[tuple[dict[str, str], bytes]]] = {}
        self.refused: dict[str, int] = {}
        self.release = threading.Event()  # set at teardown: hung handlers return
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                mode = receiver.modes.get(self.path, "ok")
                if mode == "hang":
                    receiver.release.wait(60)
                    self.close_connection = True
                    return
                with receiver.lock:
                    if mode == "503":
                        receiver.refused[self.path] = receiver.refused.get(self.path, 0) + 1
                    else:
                        got = receiver.received.setdefault(self.path, [])
                        got.append((dict(self.headers.items()), body))
                self.send_response(503 if mode == "503" else 200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def requests(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return list(self.received.get(path, []))

    def spans(self, path: str) -> list[tuple[dict[str, Any], Span]]:
        """(resource attributes, span) of everything exported to `path` so far."""
        out = []
        for _, body in self.requests(path):
            for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
                resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((resource, span) for span in ss.spans)
        return out


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attrs(span: Span) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in span.attributes}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    rx.thread.start()
    try:
        yield rx
    finally:
        rx.release.set()
        rx.server.shutdown()
        rx.server.server_close()


def config(mock: str, otel: str) -> str:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    return f"""
type: gateway-settings
server:
  drain_delay_s: 0
  shutdown_grace_s: 1
  timeouts: {{connect_ms: 2000, request_ms: 10000}}
otel:
{otel}
metrics:
  metadata_logging_keys: [project_id]
---
type: provider-account
name: mock
provider: openai-compatible
base_url: {mock}/v1
api_key: {PROVIDER_KEY}
models:
  - {{name: gpt-4o, model_id: gpt-4o, input_cost_per_million: 2.5, output_cost_per_million: 10}}
  - gpt-4o-mini
  - mock-status-503
---
type: provider-account
name: dead
provider: openai-compatible
base_url: {dead}
api_key: {PROVIDER_KEY}
models: [gpt-4o]
---
type: gateway-keys
keys:
  - {{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}
  - name: limited
    key: {LIMITED_KEY}
    subject: "team:interns"
    allowed_models: [mock/gpt-4o-mini]
---
type: gateway-load-balancing-config
rules:
  - id: fallback
    type: priority-based-routing
    when: {{models: [fb]}}
    load_balance_targets:
      - {{target: mock/mock-status-503, priority: 0, retry_config: {{attempts: 0}}}}
      - {{target: mock/gpt-4o, priority: 1}}
---
type: gateway-rate-limiting-config
rules:
  - id: capped
    when: {{metadata: {{project_id: capped}}}}
    limit_to: 1
    unit: requests_per_minute
"""


def otel_section(url: str, *extra: str) -> str:
    lines = [
        f"traces_endpoint: {url}",
        f'headers: {{Authorization: "{OTLP_AUTH}", Langsmith-Project: tollway-e2e}}',
        "resource_attributes: {env: e2e, region: eu-west-1, tenant_id: acme}",
        "service_name: edge-gateway",
        "schedule_delay_ms: 50",
        *extra,
    ]
    return "\n".join(f"  {line}" for line in lines)


Starter = Callable[..., Server]


@pytest.fixture(scope="module")
def start(module_gateways: Gateways) -> Starter:
    """Starts `tollway serve` for this module; every gateway is stopped at teardown."""
    return module_gateways.start


@pytest.fixture(scope="module")
def traced(start: Starter, mock_upstream: Server, receiver: Receiver) -> Server:
    """Two workers exporting everything (prompts included) to /a/v1/traces."""
    otel = otel_section(f"{receiver.url}/a/v1/traces", "exclude_request_data: false")
    return start(config(mock_upstream.url, otel), workers=2)


def client(gw: Server, key: str = CLIENT_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)


def chat(gw: Server, model: str, rid: str, project: str = "p1", **kw: Any) -> Any:
    """A non-streamed chat; returns the parsed completion."""
    headers = {"x-request-id": rid, "X-TFY-METADATA": f'{{"project_id": "{project}"}}'}
    headers.update(kw.pop("extra_headers", {}))
    return client(gw).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"tell me about the {PROMPT_WORD}"}],
        extra_headers=headers,
        **kw,
    )


def wait_until(cond: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout}s: {cond}")


def trace_of(rx: Receiver, path: str, rid: str) -> tuple[dict[str, Any], Span, list[Span]]:
    """(resource, root span, attempt spans in attempt order) of the request `rid`; the policy
    steps' INTERNAL children are left out (see `children`)."""

    def find() -> tuple[dict[str, Any], Span, list[Span]] | None:
        spans = rx.spans(path)
        root = next(
            ((res, s) for res, s in spans if attrs(s).get("tollway.request_id") == rid), None
        )
        if root is None:
            return None
        kids = [
            s
            for _, s in spans
            if s.parent_span_id == root[1].span_id and s.kind == Span.SPAN_KIND_CLIENT
        ]
        return root[0], root[1], sorted(kids, key=lambda s: attrs(s)["tollway.attempt"])

    found: tuple[dict[str, Any], Span, list[Span]] = wait_until(find)
    return found


def test_spans_names_parentage_genai_usage_resource_and_auth_header(
    traced: Server, receiver: Receiver
) -> None:
    path = "/a/v1/traces"
    answer = chat(traced, "fb", "rid-fallback", project="p-span", temperature=0.3, max_tokens=20)
    resource, root, kids = trace_of(receiver, path, "rid-fallback")
    # Two attempts: the 503 target, then the fallback that answered.
    assert len(kids) == 2
    assert root.kind == Span.SPAN_KIND_SERVER and root.name == "POST /v1/chat/completions"
    assert root.parent_span_id == b""
    ra = attrs(root)
    assert ra["http.response.status_code"] == 200
    assert ra["tollway.key.name"] == "client" and ra["tollway.subject"] == "user:alice"
    assert ra["tollway.rule_ids"] == ["fallback"]
    assert ra["tollway.metadata.project_id"] == "p-span"
    assert ra["gen_ai.request.model"] == "fb"
    first, second = kids
    for kid in kids:
        assert kid.kind == Span.SPAN_KIND_CLIENT and kid.trace_id == root.trace_id
        assert root.start_time_unix_nano <= kid.start_time_unix_nano
        assert kid.end_time_unix_nano <= root.end_time_unix_nano
    assert first.name == "chat mock-status-503" and second.name == "chat gpt-4o"
    a1, a2 = attrs(first), attrs(second)
    assert a1["tollway.attempt"] == 1 and a1["error.type"]
    assert first.status.code == first.status.STATUS_CODE_ERROR
    assert a2["tollway.attempt"] == 2 and a2["tollway.fallback_reason"] == "503"
    assert a2["gen_ai.operation.name"] == "chat" and a2["gen_ai.provider.name"] == "openai"
    assert a2["gen_ai.request.model"] == "gpt-4o" and a2["tollway.target"] == "mock/gpt-4o"
    assert a2["gen_ai.response.model"] == answer.model
    assert a2["gen_ai.response.id"] == answer.id
    assert a2["gen_ai.response.finish_reasons"] == [answer.choices[0].finish_reason]
    assert a2["gen_ai.request.temperature"] == 0.3 and a2["gen_ai.request.max_tokens"] == 20
    # Token counts are the provider's usage, exactly as the client got it.
    assert a2["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert a2["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    expected_cost = (answer.usage.prompt_tokens * 2.5 + answer.usage.completion_tokens * 10) / 1e6
    assert a2["tollway.cost_usd"] == pytest.approx(expected_cost)
    assert resource["service.name"] == "edge-gateway"
    assert (resource["env"], resource["region"], resource["tenant_id"]) == (
        "e2e",
        "eu-west-1",
        "acme",
    )
    headers = {k.lower(): v for k, v in receiver.requests(path)[0][0].items()}
    assert headers["authorization"] == OTLP_AUTH
    assert headers["langsmith-project"] == "tollway-e2e"
    assert headers["content-type"] == "application/x-protobuf"


def test_a_float_max_tokens_keeps_the_request_in_the_traces(
    traced: Server, receiver: Receiver
) -> None:
    """The gateway does not validate `max_tokens` (the provider does, and the mock refuses a
    float): the request still reaches the record, read as the whole number it is, and costs no
    other request its spans (a float in that integer field once failed the telemetry slice)."""
    path = "/a/v1/traces"
    with pytest.raises(openai.BadRequestError):
        chat(traced, "mock/gpt-4o", "rid-float-max", project="p-float", max_tokens=25.0)
    chat(traced, "mock/gpt-4o", "rid-after-float", project="p-float")
    _, root, (kid,) = trace_of(receiver, path, "rid-float-max")
    assert attrs(root)["http.response.status_code"] == 400
    assert attrs(kid)["gen_ai.request.max_tokens"] == 25
    trace_of(receiver, path, "rid-after-float")


def test_streamed_usage_and_incoming_traceparent(traced: Server, receiver: Receiver) -> None:
    stream = client(traced).chat.completions.create(
        model="mock/gpt-4o",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={
            "x-request-id": "rid-traceparent",
            "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
        },
    )
    usage = [c.usage for c in stream if c.usage is not None][-1]
    _, root, kids = trace_of(receiver, "/a/v1/traces", "rid-traceparent")
    assert root.trace_id == bytes.fromhex(TRACE_ID)
    assert root.parent_span_id == bytes.fromhex(PARENT_ID)
    (kid,) = kids
    assert kid.trace_id == root.trace_id and kid.parent_span_id == root.span_id
    ka = attrs(kid)
    assert ka["tollway.stream"] is True
    assert ka["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert ka["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert ka["tollway.ttft_ms"] >= 0 and ka["gen_ai.response.time_to_first_chunk"] >= 0


def test_exclude_request_data_keeps_prompts_and_answers_out_of_every_span(
    start: Starter, mock_upstream: Server, receiver: Receiver, traced: Server
) -> None:
    url = f"{receiver.url}/b/v1/traces"
    excluded = start(config(mock_upstream.url, otel_section(url, "exclude_request_data: true")))
    for i, gw in enumerate((excluded, traced)):
        chat(gw, "mock/gpt-4o", f"rid-content-{i}")
        stream = client(gw).chat.completions.create(
            model="mock/gpt-4o",
            messages=[{"role": "user", "content": f"stream the {PROMPT_WORD}"}],
            stream=True,
            extra_headers={"x-request-id": f"rid-content-stream-{i}"},
        )
        assert ANSWER_TEXT in "".join(c.choices[0].delta.content or "" for c in stream)
    trace_of(receiver, "/b/v1/traces", "rid-content-stream-0")
    trace_of(receiver, "/a/v1/traces", "rid-content-stream-1")
    excluded_bytes = b"".join(body for _, body in receiver.requests("/b/v1/traces"))
    assert PROMPT_WORD.encode() not in excluded_bytes
    assert ANSWER_TEXT.encode() not in excluded_bytes
    assert b"gen_ai.input.messages" not in excluded_bytes
    # Without the option the prompt is exported (the opt-in GenAI content attribute).
    _, _, kids = trace_of(receiver, "/a/v1/traces", "rid-content-1")
    assert PROMPT_WORD in attrs(kids[0])["gen_ai.input.messages"]


def samples(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def scrape(gw: Server) -> str:
    # A new connection per scrape, so scrapes land on different workers.
    r = httpx.get(f"{gw.url}/metrics", headers={"connection": "close"}, timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def test_a_slow_or_failing_collector_does_not_slow_requests_and_drops_are_counted(
    start: Starter, mock_upstream: Server, receiver: Receiver
) -> None:
    path = "/c/v1/traces"
    otel = otel_section(
        receiver.url + path, "queue_size: 10", "batch_size: 5", "export_timeout_ms: 1000"
    )
    # No access log: ~400 lines would fill the pipe `spawn` gives the gateway for its output,
    # which nobody reads until it stops, and a worker writing to a full pipe blocks.
    gw = start(config(mock_upstream.url, otel), env={"TOLLWAY_LOG_LEVEL": "WARNING"})
    http = httpx.Client(
        base_url=gw.url,
        headers={"authorization": f"Bearer {CLIENT_KEY}", "connection": "keep-alive"},
    )
    body = {"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

    def fifty() -> float:
        t0 = time.perf_counter()
        for _ in range(50):
            assert http.post("/v1/chat/completions", json=body).status_code == 200
        return time.perf_counter() - t0

    def dropped() -> float:
        return samples(scrape(gw), "llm_gateway_span_dropped_total")

    try:
        fifty()  # warm up connections and code paths
        healthy = fifty()
        wait_until(lambda: receiver.requests(path))
        assert dropped() == 0
        receiver.modes[path] = "hang"
        hanging = fifty()
        after_hang = wait_until(dropped)
        receiver.modes[path] = "503"
        failing = fifty()
        wait_until(lambda: receiver.refused.get(path, 0) > 0)
        wait_until(lambda: dropped() > after_hang)
        # A burst finishes more requests within one event-loop turn than the span queue holds.
        assert burst(gw, body, 64) == [200] * 64
        text = scrape(gw)
        # Metrics stay exact while spans are dropped.
        assert samples(text, "llm_gateway_requests_total", status="200") == 264
        assert samples(text, "llm_gateway_span_dropped_total", reason="backlog_full") > 0
    finally:
        receiver.modes[path] = "ok"
        http.close()
    assert hanging < 2 * healthy + 1.0, (healthy, hanging)
    assert failing < 2 * healthy + 1.0, (healthy, failing)


def burst(gw: Server, body: dict[str, Any], n: int) -> list[int]:
    async def run() -> list[int]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=gw.url, limits=limits, timeout=30) as http:
            headers = {"authorization": f"Bearer {CLIENT_KEY}"}
            replies = await asyncio.gather(
                *(http.post("/v1/chat/completions", json=body, headers=headers) for _ in range(n))
            )
            return [r.status_code for r in replies]

    return asyncio.run(run())


ISSUE_FAMILIES = (
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
)


def test_prometheus_families_metadata_label_and_totals_over_two_workers(traced: Server) -> None:
    n = 24
    http = httpx.Client(base_url=traced.url)
    meta = {"X-TFY-METADATA": '{"project_id": "totals"}'}
    usage = [0, 0]
    for i in range(n):
        # A new connection for each request spreads them over both workers.
        r = http.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {CLIENT_KEY}", "connection": "close", **meta},
            json={"model": "mock/gpt-4o", "messages": [{"role": "user", "content": f"q{i}"}]},
        )
        assert r.status_code == 200
        usage[0] += r.json()["usage"]["prompt_tokens"]
        usage[1] += r.json()["usage"]["completion_tokens"]
    http.close()
    mine = {"llm_gateway_metadata_project_id": "totals"}
    req = "llm_gateway_requests_total"
    text = wait_until(lambda: (t := scrape(traced)) and samples(t, req, **mine) == n and t, 15)
    families = {f.name for f in text_string_to_metric_families(text)}
    assert set(ISSUE_FAMILIES) <= families, set(ISSUE_FAMILIES) - families
    labels = {"model_name": "mock/gpt-4o", "target": "mock/gpt-4o", "username": "user:alice"}
    assert samples(text, req, status="200", **labels, **mine) == n
    assert samples(text, "llm_gateway_input_tokens", **mine) == usage[0]
    assert samples(text, "llm_gateway_output_tokens", **mine) == usage[1]
    cost = (usage[0] * 2.5 + usage[1] * 10) / 1e6
    assert samples(text, "llm_gateway_request_cost", **mine) == pytest.approx(cost)
    assert samples(text, "llm_gateway_request_processing_ms_count", **mine) == n
    # Every later scrape, whichever worker answers it, sees the same totals (never double).
    for _ in range(6):
        assert samples(scrape(traced), req, **mine) == n


def test_no_secret_in_logs_spans_metrics_or_error_bodies(
    start: Starter, mock_upstream: Server, receiver: Receiver
) -> None:
    path = "/d/v1/traces"
    gw = start(
        config(mock_upstream.url, otel_section(receiver.url + path)),
        env={"TOLLWAY_LOG_LEVEL": "DEBUG"},
    )
    wrong_key = "sk-wrong-client-key-77665544"
    http = httpx.Client(base_url=gw.url)
    bodies: list[str] = []

    def post(key: str, model: str, project: str = "p1", stream: bool = False) -> int:
        r = http.post(
            "/v1/chat/completions",
            headers={
                "authorization": f"Bearer {key}",
                "X-TFY-METADATA": msgspec.json.encode({"project_id": project}).decode(),
            },
            json={
                "model": model,
                "messages": [{"role": "user", "content": "hi"}],
                "stream": stream,
            },
        )
        bodies.append(r.text)
        return r.status_code

    statuses = [
        post(CLIENT_KEY, "mock/gpt-4o"),
        post(CLIENT_KEY, "mock/gpt-4o", stream=True),
        post(CLIENT_KEY, "fb"),
        post(wrong_key, "mock/gpt-4o"),
        post(LIMITED_KEY, "mock/gpt-4o"),
        post(CLIENT_KEY, "mock/gpt-4o", project="capped"),
        post(CLIENT_KEY, "mock/gpt-4o", project="capped"),
        post(CLIENT_KEY, "dead/gpt-4o"),
        post(CLIENT_KEY, "mock/mock-status-503"),
    ]
    http.close()
    assert statuses[:7] == [200, 200, 200, 401, 403, 200, 429]
    assert statuses[7] in (502, 503) and statuses[8] in (502, 503)
    metrics = scrape(gw)
    limit = "llm_gateway_rate_limit_requests_total"
    assert samples(metrics, limit, rule="capped", result="allowed") == 1
    assert samples(metrics, limit, rule="capped", result="blocked") == 1
    fail = "llm_gateway_request_model_inference_failure"
    assert samples(metrics, fail, target="mock/mock-status-503", status="503") == 2
    # All nine requests (refusals included) reach the collector as root spans.
    wait_until(lambda: sum(1 for _, s in receiver.spans(path) if not s.parent_span_id) == 9)
    # A refusal after authentication (the 403) still names the key, never the secret.
    roots = [attrs(s) for _, s in receiver.spans(path) if not s.parent_span_id]
    refused = [a for a in roots if a.get("http.response.status_code") == 403]
    assert refused and refused[0].get("tollway.key.name") == "limited", refused
    output = gw.output()  # stops the gateway: its whole stdout and stderr
    assert "tollway.access" in output or "request_id" in output  # the access log was written
    spans = b"".join(body for _, body in receiver.requests(path)).decode(errors="replace")
    secrets = {
        "client key": CLIENT_KEY,
        "limited key": LIMITED_KEY,
        "wrong key": wrong_key,
        "client key hash": hashlib.sha256(CLIENT_KEY.encode()).hexdigest(),
        "provider key": PROVIDER_KEY,
        "OTLP auth header": OTLP_TOKEN,
    }
    for where, text in {"log": output, "spans": spans, "metrics": metrics}.items():
        for name, secret in secrets.items():
            assert secret not in text, f"{name} in {where}"
    for body in bodies:
        for name, secret in secrets.items():
            assert secret not in body, f"{name} in an error body"
