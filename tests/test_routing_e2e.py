"""Routing end to end: real `tollway serve`, real mocks, the real `openai` client."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import openai
import pytest
from conftest import CLIENT_KEY, GatewayFactory, Server, mock_server

MESSAGES: list[Any] = [{"role": "user", "content": "route me"}]


@pytest.fixture(scope="module")
def flaky_mock() -> Iterator[Server]:
    """A mock whose first chat request fails with 503, then answers."""
    with mock_server("--fail-status", "503", "--fail-first", "1") as server:
        yield server


def config(mock: str, flaky: str) -> str:
    return f"""
type: provider-account
name: m
provider: openai-compatible
base_url: {mock}/v1
models: [gpt-4o-mini, gpt-4o, mock-status-503, mock-status-400, mock-hang]
---
type: provider-account
name: flaky
provider: openai-compatible
base_url: {flaky}/v1
models: [gpt-4o-mini]
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
---
type: gateway-load-balancing-config
name: test-routing
rules:
  - id: split
    type: weight-based-routing
    when: {{models: [split]}}
    load_balance_targets:
      - {{target: m/gpt-4o-mini, weight: 70}}
      - {{target: m/gpt-4o, weight: 30}}
  - id: prod-assistant
    type: priority-based-routing
    when: {{models: [assistant], metadata: {{env: prod}}}}
    load_balance_targets: [{{target: m/gpt-4o}}]
  - id: assistant
    type: priority-based-routing
    when: {{models: [assistant]}}
    load_balance_targets: [{{target: m/gpt-4o-mini}}]
  - id: retry
    type: priority-based-routing
    when: {{models: [retry-me]}}
    load_balance_targets:
      - target: flaky/gpt-4o-mini
        retry_config: {{attempts: 2, delay: 10, on_status_codes: ["503"]}}
  - id: fallback
    type: priority-based-routing
    when: {{models: [fb]}}
    load_balance_targets:
      - {{target: m/mock-status-503, priority: 0, retry_config: {{attempts: 0}}}}
      - {{target: m/gpt-4o, priority: 1}}
  - id: no-fallback
    type: priority-based-routing
    when: {{models: [nofb]}}
    load_balance_targets:
      - {{target: m/mock-status-400, priority: 0}}
      - {{target: m/gpt-4o, priority: 1}}
  - id: slow
    type: priority-based-routing
    when: {{models: [slow]}}
    load_balance_targets:
      - {{target: m/mock-hang, priority: 0}}
      - {{target: m/gpt-4o, priority: 1}}
  - id: override
    type: priority-based-routing
    when: {{models: [tuned]}}
    load_balance_targets:
      - {{target: m/gpt-4o, override_params: {{temperature: 0.1, max_tokens: 5}}}}
"""


@pytest.fixture
def routed(
    start_gateway: GatewayFactory, mock_upstream: Server, flaky_mock: Server
) -> tuple[Server, openai.OpenAI]:
    gw = start_gateway(config(mock_upstream.url, flaky_mock.url))
    return gw, openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)


def chat(client: openai.OpenAI, model: str, **kw: Any) -> Any:
    return client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, **kw)


def seen(mock: Server) -> list[dict[str, Any]]:
    reqs: list[dict[str, Any]] = httpx.get(f"{mock.url}/_mock/requests").json()
    return [r for r in reqs if r["path"] == "/v1/chat/completions"]


def test_weighted_split_and_headers(routed: tuple[Server, openai.OpenAI]) -> None:
    _, client = routed
    counts: Counter[str] = Counter()
    for _ in range(200):
        raw = chat(client, "split")
        counts[raw.headers["x-tfy-resolved-model"]] += 1
        applied = msgspec.json.decode(raw.headers["x-tfy-applied-configurations"])
        assert applied == {"load_balancing": "split"}
    assert 110 <= counts["m/gpt-4o-mini"] <= 170, counts
    assert counts["m/gpt-4o-mini"] + counts["m/gpt-4o"] == 200


def test_metadata_picks_the_rule(routed: tuple[Server, openai.OpenAI]) -> None:
    _, client = routed
    prod = chat(client, "assistant", extra_headers={"X-TFY-METADATA": '{"env": "prod"}'})
    assert prod.headers["x-tfy-resolved-model"] == "m/gpt-4o"
    dev = chat(client, "assistant", extra_headers={"X-TFY-METADATA": '{"env": "dev"}'})
    assert dev.headers["x-tfy-resolved-model"] == "m/gpt-4o-mini"
    assert msgspec.json.decode(dev.headers["x-tfy-applied-configurations"]) == {
        "load_balancing": "assistant"
    }


def test_retry_on_the_same_target_then_success(
    routed: tuple[Server, openai.OpenAI], flaky_mock: Server
) -> None:
    _, client = routed
    before = len(seen(flaky_mock))
    raw = chat(client, "retry-me")
    assert raw.headers["x-tfy-resolved-model"] == "flaky/gpt-4o-mini"
    statuses = [r["status"] for r in seen(flaky_mock)[before:]]
    assert statuses == [503, 200]


def test_fallback_on_503_and_unhealthy_target_stops_being_tried_first(
    routed: tuple[Server, openai.OpenAI], mock_upstream: Server
) -> None:
    _, client = routed
    httpx.delete(f"{mock_upstream.url}/_mock/requests")
    for _ in range(2):
        raw = chat(client, "fb")
        assert raw.headers["x-tfy-resolved-model"] == "m/gpt-4o"
    models = [r["body"]["model"] for r in seen(mock_upstream)]
    assert models == ["mock-status-503", "gpt-4o", "mock-status-503", "gpt-4o"]
    # Two failures within two minutes: the 503 target is now tried last.
    chat(client, "fb")
    assert [r["body"]["model"] for r in seen(mock_upstream)][4:] == ["gpt-4o"]


def test_no_fallback_on_a_status_outside_the_codes(
    routed: tuple[Server, openai.OpenAI], mock_upstream: Server
) -> None:
    _, client = routed
    httpx.delete(f"{mock_upstream.url}/_mock/requests")
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, "nofb")
    assert info.value.response.headers["x-tfy-resolved-model"] == "m/mock-status-400"
    assert [r["body"]["model"] for r in seen(mock_upstream)] == ["mock-status-400"]


def test_timeout_falls_back(routed: tuple[Server, openai.OpenAI]) -> None:
    _, client = routed
    raw = chat(client, "slow", extra_headers={"x-tfy-request-timeout": "300"})
    assert raw.headers["x-tfy-resolved-model"] == "m/gpt-4o"
    # Streams fall back too, as long as nothing reached the client yet.
    stream = client.chat.completions.create(
        model="slow", messages=MESSAGES, stream=True, extra_headers={"x-tfy-request-timeout": "300"}
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_override_params_reach_the_provider(
    routed: tuple[Server, openai.OpenAI], mock_upstream: Server
) -> None:
    _, client = routed
    chat(client, "tuned", temperature=0.9)
    body = seen(mock_upstream)[-1]["body"]
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("gpt-4o", 0.1, 5)


def test_virtual_models_are_listed_and_unknown_ones_are_404(
    routed: tuple[Server, openai.OpenAI],
) -> None:
    _, client = routed
    ids = {m.id for m in client.models.list()}
    assert {"split", "assistant", "fb", "m/gpt-4o"} <= ids
    with pytest.raises(openai.NotFoundError):
        chat(client, "no-such-virtual")


def test_a_providers_retry_after_is_honoured_within_the_retry_budget(
    start_gateway: GatewayFactory, mock_upstream: Server
) -> None:
    """The mock's 429 says retry-after: 1. A budget of 2 x 300 ms cannot wait that long, so
    the gateway falls back at once; a budget of 2 x 800 ms waits >= 1 s, then retries."""

    def rule(delay_ms: int) -> str:
        return f"""
type: provider-account
name: m
provider: openai-compatible
base_url: {mock_upstream.url}/v1
models: [gpt-4o, mock-status-429]
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
---
type: gateway-load-balancing-config
rules:
  - id: busy
    type: priority-based-routing
    when: {{models: [busy]}}
    load_balance_targets:
      - target: m/mock-status-429
        priority: 0
        retry_config: {{attempts: 2, delay: {delay_ms}, on_status_codes: ["429"]}}
      - {{target: m/gpt-4o, priority: 1}}
"""

    for delay_ms, tries_of_429, at_least_s in ((300, 1, 0.0), (800, 3, 2.0)):
        gw = start_gateway(rule(delay_ms))
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        httpx.delete(f"{mock_upstream.url}/_mock/requests")
        started = time.monotonic()
        raw = chat(client, "busy")
        took = time.monotonic() - started
        assert raw.headers["x-tfy-resolved-model"] == "m/gpt-4o"
        models = [r["body"]["model"] for r in seen(mock_upstream)]
        assert models == ["mock-status-429"] * tries_of_429 + ["gpt-4o"], models
        assert took >= at_least_s, took
        if tries_of_429 == 1:
            assert took < 0.5, "fell back without waiting"
