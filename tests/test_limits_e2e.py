"""Rate limits and budgets end to end: real `tollway serve`, the mock, the `openai` client."""

from __future__ import annotations

from typing import Any

import msgspec
import openai
import pytest
from conftest import CLIENT_KEY, GatewayFactory, Server

MESSAGES: list[Any] = [{"role": "user", "content": "count my tokens"}]


def config(mock: str, extra: str) -> str:
    return f"""
type: provider-account
name: m
provider: openai-compatible
base_url: {mock}/v1
models: [gpt-4o-mini, gpt-4o]
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
---
{extra}"""


def client_for(gw: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)


def chat(client: openai.OpenAI, model: str = "m/gpt-4o-mini", project: str | None = None) -> Any:
    headers = {"X-TFY-METADATA": msgspec.json.encode({"project_id": project}).decode()}
    return client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, extra_headers=headers if project else {}
    )


def test_per_metadata_request_limit(start_gateway: GatewayFactory, mock_upstream: Server) -> None:
    gw = start_gateway(
        config(
            mock_upstream.url,
            """type: gateway-rate-limiting-config
name: limits
rules:
  - id: per-project
    when: {models: [m/gpt-4o-mini]}
    limit_to: 5
    unit: requests_per_minute
    rate_limit_applies_per: [metadata.project_id]
""",
        )
    )
    client = client_for(gw)
    for i in range(5):
        raw = chat(client, project="p1")
        assert raw.headers["x-ratelimit-limit-requests"] == "5"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(4 - i)
    applied = msgspec.json.decode(raw.headers["x-tfy-applied-configurations"])
    assert applied == {"rate_limiting": "per-project"}
    with pytest.raises(openai.RateLimitError) as info:
        chat(client, project="p1")
    r = info.value.response
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert "per-project" in r.json()["error"]["message"]
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-reset-requests" in r.headers
    # Another project has its own bucket; another model matches no rule.
    assert chat(client, project="p2").http_response.status_code == 200
    assert chat(client, model="m/gpt-4o", project="p1").http_response.status_code == 200


def test_token_limit_is_charged_with_real_usage(
    start_gateway: GatewayFactory, mock_upstream: Server
) -> None:
    gw = start_gateway(
        config(
            mock_upstream.url,
            """type: gateway-rate-limiting-config
rules:
  - id: tokens
    when: {subjects: ["user:alice"]}
    limit_to: 20
    unit: tokens_per_hour
""",
        )
    )
    client = client_for(gw)
    first = chat(client)
    assert first.parse().usage.total_tokens > 20
    # The answer cost more than the bucket held: it is negative now, so the next waits.
    with pytest.raises(openai.RateLimitError) as info:
        chat(client)
    assert info.value.response.headers["x-ratelimit-limit-tokens"] == "20"


def test_budget_blocks_and_audit_mode_passes(
    start_gateway: GatewayFactory, mock_upstream: Server
) -> None:
    gw = start_gateway(
        config(
            mock_upstream.url,
            """type: gateway-budget-config
rules:
  - id: audit-4o
    when: {models: [m/gpt-4o]}
    limit_to: 0.00000001
    unit: cost_per_day
    audit_mode: true
  - id: tiny
    when: {subjects: ["user:alice"]}
    limit_to: 0.0001
    unit: cost_per_month
    budget_applies_per: [user]
""",
        )
    )
    client = client_for(gw)
    # One gpt-4o answer (16 output tokens at $10/M) costs more than $0.0001. It is charged
    # to every matching rule, so "tiny" is spent; but for gpt-4o the first matching rule is
    # the audit one, which never blocks.
    for _ in range(3):
        assert chat(client, model="m/gpt-4o").http_response.status_code == 200
    # For gpt-4o-mini "tiny" decides, and the gpt-4o spend already exhausted it.
    with pytest.raises(openai.RateLimitError) as info:
        chat(client, model="m/gpt-4o-mini")
    body = info.value.response.json()["error"]
    assert body["code"] == "budget_exceeded" and "tiny" in body["message"]
    assert int(info.value.response.headers["retry-after"]) > 0
