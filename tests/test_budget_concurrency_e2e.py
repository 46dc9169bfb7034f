"""Budgets under concurrency: 50 calls at once against a budget that allows about 10.

Admission reserves each request's estimated cost until it settles, so requests in flight count
against the budget: the real `openai` client, a real `tollway serve` and a slow mock (every
call is in flight at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from conftest import CLIENT_KEY, GatewayFactory, Server, mock_server

# $1000 per million tokens both ways: a token costs $0.001. The mock counts 4 + 3 words of
# prompt and answers 16 tokens: every call costs $0.023.
PRICE = 0.001
COST = (7 + 16) * PRICE
LIMIT = 9.8 * COST
MESSAGES: list[Any] = [{"role": "user", "content": "count my tokens"}]


@pytest.fixture(scope="module")
def slow_mock() -> Iterator[Server]:
    with mock_server("--latency-ms", "600") as server:
        yield server


def config(mock: str) -> str:
    return f"""
type: provider-account
name: m
provider: openai-compatible
base_url: {mock}/v1
models: [{{name: gpt, model_id: gpt-4o-mini, input_cost_per_million: 1000,
          output_cost_per_million: 1000}}]
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
---
type: gateway-budget-config
rules: [{{id: daily, when: {{}}, limit_to: {LIMIT}, unit: cost_per_day}}]
"""


async def burst(url: str, n: int, max_tokens: int | None) -> tuple[int, int, float]:
    """`n` concurrent calls: (admitted, refused for the budget, USD charged for the admitted)."""
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0)
    extra = {} if max_tokens is None else {"max_tokens": max_tokens}

    async def one() -> tuple[str, float]:
        try:
            r = await client.chat.completions.create(model="m/gpt", messages=MESSAGES, **extra)
        except openai.RateLimitError as e:
            assert e.response.json()["error"]["code"] == "budget_exceeded"
            return "refused", 0.0
        assert r.usage is not None
        return "ok", r.usage.total_tokens * PRICE

    try:
        results = await asyncio.gather(*(one() for _ in range(n)))
    finally:
        await client.close()
    ok = [usd for what, usd in results if what == "ok"]
    return len(ok), n - len(ok), sum(ok)


@pytest.mark.parametrize("max_tokens", [16, None], ids=["max_tokens", "learned-length"])
def test_concurrent_calls_cannot_overspend_a_budget(
    start_gateway: GatewayFactory, slow_mock: Server, max_tokens: int | None
) -> None:
    gw = start_gateway(config(slow_mock.url))
    spent = 0.0
    if max_tokens is None:
        # Without max_tokens the reservation is the longest answer the target gave lately
        # (1024 tokens before any): one call teaches it that answers are 16 tokens long.
        spent += asyncio.run(burst(gw.url, 1, None))[2]
    admitted, refused, charged = asyncio.run(burst(gw.url, 50, max_tokens))
    spent += charged
    print(f"\n50 concurrent calls, budget ${LIMIT:.4f} (~9.8 calls): {admitted} admitted, "
          f"{refused} refused, ${spent:.4f} spent")  # fmt: skip
    # Before reservations 13 to 19 were admitted. Now the spend passes the limit by at most
    # one call, and the budget is used (no call refused while most of it was left).
    assert spent <= LIMIT + COST, (admitted, spent)
    assert spent >= LIMIT - 2 * COST, (admitted, spent)
    assert admitted + refused == 50
    # Settled: what was reserved was given back, the real cost stays, the next is refused.
    again = asyncio.run(burst(gw.url, 3, max_tokens))
    assert again[0] == 0 if spent >= LIMIT else again[0] <= 1, again


def test_a_failed_call_gives_its_reservation_back(
    start_gateway: GatewayFactory, slow_mock: Server
) -> None:
    gw = start_gateway(
        config(slow_mock.url).replace(
            "models: [{name: gpt,",
            "models: [{name: mock-status-503, input_cost_per_million: 1000,"
            " output_cost_per_million: 1000}, {name: gpt,",
        )
    )
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    # Each failing call reserves far more than the whole budget while in flight (no
    # max_tokens: 1024 tokens); none is charged, and each gives its reservation back.
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m/mock-status-503", messages=MESSAGES)
    r = client.chat.completions.with_raw_response.create(
        model="m/gpt", messages=MESSAGES, max_tokens=16
    )
    assert r.http_response.status_code == 200
