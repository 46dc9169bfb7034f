"""The opt-in response cache through `tollway serve`: hit and miss, streams replayed as streams,
TTL expiry, subjects kept apart, hits free but rate-limited, and two replicas sharing Redis."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import CLIENT_KEY, LIMITED_KEY, GatewayFactory, Server, mock_server
from test_redis_state import RedisServer

ASK: list[Any] = [{"role": "user", "content": "Tell me something cacheable"}]
OTHER_KEY = "other-key-0123456789"


def config(mock: str, settings: str = "") -> str:
    return f"""
type: gateway-settings
{settings}
---
type: provider-account
name: mock
provider: openai-compatible
base_url: {mock}/v1
models: [gpt-4o-mini, gpt-4o]
---
type: gateway-keys
keys:
  - {{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}
  - {{name: other, key: {OTHER_KEY}, subject: "user:carol"}}
  - {{name: limited, key: {LIMITED_KEY}, subject: "user:bob"}}
---
type: gateway-cache-config
rules:
  - {{id: cache-mini, when: {{models: ["mock/gpt-4o-mini"]}}, ttl: 600, namespace: tests}}
---
type: gateway-rate-limiting-config
rules:
  - {{id: bob, when: {{subjects: ["user:bob"]}}, limit_to: 2, unit: requests_per_minute}}
"""


@pytest.fixture
def mock() -> Iterator[Server]:
    """A mock of the test's own, so counting the calls it saw is exact."""
    with mock_server() as server:
        yield server


def calls(mock: Server) -> int:
    return len(httpx.get(f"{mock.url}/_mock/requests").json())


def client(gw: Server, key: str = CLIENT_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)


def ask(c: openai.OpenAI, model: str = "mock/gpt-4o-mini", **extra: Any) -> tuple[str, str]:
    raw = c.chat.completions.with_raw_response.create(model=model, messages=ASK, **extra)
    return raw.parse().choices[0].message.content or "", raw.headers.get("x-tfy-cache-status", "")


def metric(gw: Server, name: str) -> float:
    lines = httpx.get(f"{gw.url}/metrics").text.splitlines()
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith(name))


def test_miss_then_hit_costs_nothing_and_counts(
    mock: Server, start_gateway: GatewayFactory
) -> None:
    gw = start_gateway(config(mock.url))
    c = client(gw)
    first, status1 = ask(c)
    tokens = metric(gw, "llm_gateway_output_tokens")
    second, status2 = ask(c)
    assert (status1, status2) == ("miss", "hit")
    assert first == second
    assert calls(mock) == 1, "the hit never reached the provider"
    deadline = time.monotonic() + 5
    while metric(gw, "llm_gateway_cache_hits_total") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(gw, "llm_gateway_cache_hits_total") == 1
    assert metric(gw, "llm_gateway_cache_misses_total") == 1
    assert metric(gw, "llm_gateway_cache_saved_cost_total") > 0
    assert metric(gw, "llm_gateway_output_tokens") == tokens, "a hit counts no tokens"
    # Another model has no rule: not cached, unless the request asks with the header.
    assert ask(c, "mock/gpt-4o")[1] == "bypass"
    header = {"x-tfy-cache-config": '{"type": "exact", "ttl": 60}'}
    assert ask(c, "mock/gpt-4o", extra_headers=header)[1] == "miss"
    assert ask(c, "mock/gpt-4o", extra_headers=header)[1] == "hit"
    none = {"x-tfy-cache-config": '{"type": "none"}'}
    assert ask(c, extra_headers=none)[1] == "bypass"
    with pytest.raises(openai.BadRequestError) as bad:
        ask(c, extra_headers={"x-tfy-cache-config": '{"type": "semantic"}'})
    assert "x-tfy-cache-config" in str(bad.value)


def test_streams_are_replayed_as_streams(mock: Server, start_gateway: GatewayFactory) -> None:
    gw = start_gateway(config(mock.url))
    body = {"model": "mock/gpt-4o-mini", "messages": ASK, "stream": True}
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    seen = []
    for _ in range(2):
        with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, headers=headers) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            seen.append((r.headers["x-tfy-cache-status"], b"".join(r.iter_bytes())))
    assert [s for s, _ in seen] == ["miss", "hit"]
    assert seen[0][1] == seen[1][1] and seen[0][1].endswith(b"data: [DONE]\n\n")
    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client(gw).chat.completions.create(
            model="mock/gpt-4o-mini", messages=ASK, stream=True
        )
        if chunk.choices
    )
    assert text == ask(client(gw))[0]
    assert calls(mock) == 2, "one stream and one non-stream call reached the provider"


def test_ttl_expiry(mock: Server, start_gateway: GatewayFactory) -> None:
    gw = start_gateway(config(mock.url))
    header = {"x-tfy-cache-config": '{"type": "exact", "ttl": 1, "namespace": "short"}'}
    c = client(gw)
    assert ask(c, "mock/gpt-4o", extra_headers=header)[1] == "miss"
    assert ask(c, "mock/gpt-4o", extra_headers=header)[1] == "hit"
    time.sleep(1.2)
    assert ask(c, "mock/gpt-4o", extra_headers=header)[1] == "miss"


def test_subjects_never_see_each_others_answers(
    mock: Server, start_gateway: GatewayFactory
) -> None:
    gw = start_gateway(config(mock.url))
    assert ask(client(gw))[1] == "miss"
    assert ask(client(gw, OTHER_KEY))[1] == "miss"
    assert ask(client(gw, OTHER_KEY))[1] == "hit"
    assert calls(mock) == 2


def test_hits_count_request_rate_limits(mock: Server, start_gateway: GatewayFactory) -> None:
    gw = start_gateway(config(mock.url))
    bob = client(gw, LIMITED_KEY)
    assert [ask(bob)[1] for _ in range(2)] == ["miss", "hit"]
    with pytest.raises(openai.RateLimitError):
        ask(bob)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_two_replicas_share_answers_through_redis(
    mock: Server, start_gateway: GatewayFactory
) -> None:
    redis = RedisServer()
    redis.start()
    try:
        settings = f"cache: {{backend: redis, redis_url: '{redis.url}', timeout_ms: 200}}"
        a = start_gateway(config(mock.url, settings))
        b = start_gateway(config(mock.url, settings))
        assert ask(client(a))[1] == "miss"
        deadline = time.monotonic() + 5
        status = ""
        while status != "hit" and time.monotonic() < deadline:
            time.sleep(0.05)  # the write is made in the background
            status = ask(client(b))[1]
        assert status == "hit"
        assert calls(mock) == 1
    finally:
        redis.kill()
    # Redis gone: lookups are misses, requests still succeed.
    assert ask(client(a))[1] == "miss"
