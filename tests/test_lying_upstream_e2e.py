"""Lying and leaky providers against a real `tollway serve`: an answer that is not an answer
is a 502 and falls back, a huge one is cut off and counted, missing usage is estimated (never
0), and no provider secret or client key ever reaches the client, whatever the status.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import CLIENT_KEY, PROVIDER_KEY, Gateways, Server

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
MESSAGES = [{"role": "user", "content": "hello"}]
HEADER_TOKEN = "hdr-token-0123456789"


@pytest.fixture(scope="module")
def gateway(mock_upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = f"""
type: gateway-settings
server:
  timeouts: {{connect_ms: 2000, request_ms: 10000}}
  max_response_bytes: 65536
---
type: provider-account
name: mock
provider: openai-compatible
base_url: {mock_upstream.url}/v1
api_key: {PROVIDER_KEY}
headers: {{x-proxy-token: {HEADER_TOKEN}, x-env: production}}
models: [gpt-4o, mock-html, mock-truncated, mock-oversize, mock-no-usage, mock-leak-200,
         mock-leak-400, mock-leak-429, mock-leak-500]
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
---
type: gateway-load-balancing-config
name: lies
rules:
  - id: html-first
    type: priority-based-routing
    when: {{models: [html-first]}}
    load_balance_targets:
      - {{target: mock/mock-html, priority: 0}}
      - {{target: mock/gpt-4o, priority: 1}}
  - id: truncated-first
    type: priority-based-routing
    when: {{models: [truncated-first]}}
    load_balance_targets:
      - {{target: mock/mock-truncated, priority: 0}}
      - {{target: mock/gpt-4o, priority: 1}}
"""
    gateways = Gateways(tmp_path_factory.mktemp("lies"))
    try:
        yield gateways.start(config)
    finally:
        gateways.close()


def chat(gateway: Server, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, **extra}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH, timeout=10)


def metric_lines(gateway: Server, name: str, *labels: str) -> list[str]:
    text = httpx.get(f"{gateway.url}/metrics").text
    return [
        line
        for line in text.splitlines()
        if line.startswith(name) and all(label in line for label in labels)
    ]


def wait_metric(gateway: Server, name: str, *labels: str) -> float:
    """The value of the first matching series, once telemetry has folded it in."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = metric_lines(gateway, name, *labels)
        if lines:
            return float(lines[0].rsplit(" ", 1)[1])
        time.sleep(0.1)
    raise AssertionError(f"no {name} series with {labels}")


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (PROVIDER_KEY, CLIENT_KEY, HEADER_TOKEN):
            assert secret not in text


@pytest.mark.parametrize("model", ["mock/mock-html", "mock/mock-truncated"])
def test_a_200_that_is_not_an_answer_is_a_502(gateway: Server, model: str) -> None:
    resp = chat(gateway, model)
    assert resp.status_code == 502
    error = resp.json()["error"]
    assert error["code"] == "invalid_upstream_response"
    assert error["type"] == "api_error"


@pytest.mark.parametrize("model", ["html-first", "truncated-first"])
def test_a_lying_target_falls_back(gateway: Server, model: str) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.headers["x-tfy-resolved-model"] == "mock/gpt-4o"
    assert raw.parse().choices[0].message.content


def test_an_html_page_for_a_stream_is_a_502_before_any_byte_and_falls_back(
    gateway: Server,
) -> None:
    resp = chat(gateway, "mock/mock-html", stream=True)
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "invalid_upstream_response"
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    stream = client.chat.completions.create(model="html-first", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text


def test_an_answer_past_the_size_limit_is_a_502_and_counted(gateway: Server) -> None:
    resp = chat(gateway, "mock/mock-oversize")
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "upstream_response_too_large"
    failures = "llm_gateway_request_model_inference_failure"
    assert wait_metric(gateway, failures, 'error_type="response_too_large"') >= 1
    assert chat(gateway, "mock/gpt-4o").status_code == 200  # the pool is still fine


def test_a_stream_past_the_size_limit_ends_with_an_error_event(gateway: Server) -> None:
    body = {"model": "mock/mock-oversize", "messages": MESSAGES, "stream": True}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH, timeout=10
    ) as resp:
        text = resp.read().decode()
    assert resp.status_code == 200  # committed at the first chunk, as every stream is
    assert "event: error" in text
    assert "upstream_response_too_large" in text
    assert "[DONE]" not in text


def test_missing_usage_is_estimated_and_charged(gateway: Server) -> None:
    resp = chat(gateway, "mock/mock-no-usage")
    assert resp.status_code == 200
    assert resp.headers["x-tfy-usage-estimated"] == "true"
    assert "x-tfy-usage-estimated" not in chat(gateway, "mock/gpt-4o").headers
    model = 'model_name="mock/mock-no-usage"'
    assert wait_metric(gateway, "llm_gateway_input_tokens", model) > 0
    assert wait_metric(gateway, "llm_gateway_output_tokens", model) > 0


@pytest.mark.parametrize("status", [400, 429, 500])
def test_provider_errors_quoting_secrets_are_scrubbed(gateway: Server, status: int) -> None:
    # The client's own key in its prompt comes back in the provider's error: scrubbed too.
    messages = [{"role": "user", "content": f"my key is {CLIENT_KEY}"}]
    body = {"model": f"mock/mock-leak-{status}", "messages": messages}
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH, timeout=10)
    assert resp.status_code == status
    assert "[REDACTED]" in resp.json()["error"]["message"]
    assert_no_secret(resp.text, str(resp.headers))


def test_an_answer_quoting_the_key_is_scrubbed(gateway: Server) -> None:
    resp = chat(gateway, "mock/mock-leak-200")
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == "your key is [REDACTED]"
    assert_no_secret(resp.text)


def test_stream_chunks_and_sse_error_events_are_scrubbed(gateway: Server) -> None:
    body = {"model": "mock/mock-leak-200", "messages": MESSAGES, "stream": True}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH, timeout=10
    ) as resp:
        text = resp.read().decode()
    assert resp.status_code == 200
    assert "key [REDACTED]" in text
    assert "event: error" in text
    assert "[DONE]" not in text
    assert_no_secret(text)


def test_non_secret_account_headers_are_not_scrubbed(gateway: Server) -> None:
    # The mock's answers never contain "production"; a 400 echoing the prompt does.
    messages = [{"role": "user", "content": "deploy to production"}]
    body = {"model": "mock/mock-leak-400", "messages": messages}
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH)
    assert "deploy to production" in resp.json()["error"]["message"]
