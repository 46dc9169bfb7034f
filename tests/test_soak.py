"""Soak: many requests with every kind of ending (answered, streamed to the end, left
mid-stream, given up before the answer), then the gateway's resources must be back where they
started: open files, upstream connections, threads, and memory that does not keep growing.

Measured from outside the real `tollway serve` processes (psutil). The default run sends 600
requests; `TOLLWAY_SOAK_REQUESTS=1000000 pytest -m slow -s tests/test_soak.py` the long one,
which prints the resident-memory slope.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
from conftest import CLIENT_KEY, GatewayFactory, Server, mock_server

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
ROUND = 100  # requests per round, 25 of each kind, 20 at a time


@pytest.fixture(scope="module")
def streaming_mock() -> Iterator[Server]:
    # 40 tokens 5 ms apart: a stream lasts ~0.2 s, long enough to be left in the middle.
    with mock_server("--tokens", "40", "--itl-ms", "5") as server:
        yield server


def config(mock: str) -> str:
    return f"""
type: provider-account
name: m
provider: openai-compatible
base_url: {mock}/v1
models: [{{name: gpt, model_id: gpt-4o-mini}}]
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
---
type: gateway-rate-limiting-config
rules: [{{id: tokens, when: {{}}, limit_to: 100000000, unit: tokens_per_minute}}]
---
type: gateway-budget-config
rules: [{{id: spend, when: {{}}, limit_to: 1000000, unit: cost_per_day}}]
"""


def resources(gw: Server, mock_port: int) -> dict[str, float]:
    """Summed over the gateway's processes: RSS (MB), open files, threads, and TCP
    connections to the mock (the upstream pool)."""
    root = psutil.Process(gw.proc.pid)
    procs = [root, *root.children(recursive=True)]
    out = {"rss_mb": 0.0, "fds": 0.0, "threads": 0.0, "upstream": 0.0}
    for p in procs:
        with p.oneshot():
            out["rss_mb"] += p.memory_info().rss / 2**20
            out["fds"] += p.num_fds()
            out["threads"] += p.num_threads()
            out["upstream"] += sum(
                1
                for c in p.net_connections(kind="tcp")
                if c.raddr and c.raddr.port == mock_port and c.status == psutil.CONN_ESTABLISHED
            )
    return out


async def one_round(url: str) -> list[str]:
    body = {"model": "m/gpt", "messages": [{"role": "user", "content": "soak"}]}
    stream = {**body, "stream": True}
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, limits=limits, timeout=10) as c:

        async def answered() -> str:
            r = await c.post("/v1/chat/completions", json=body)
            return str(r.status_code)

        async def streamed() -> str:
            async with c.stream("POST", "/v1/chat/completions", json=stream) as r:
                text = b"".join([chunk async for chunk in r.aiter_bytes()])
            return "done" if text.rstrip().endswith(b"[DONE]") else "cut"

        async def left_mid_stream() -> str:
            async with c.stream("POST", "/v1/chat/completions", json=stream) as r:
                async for _ in r.aiter_bytes():
                    break  # leaving the block closes the connection mid-stream
            return "left"

        async def gave_up() -> str:
            try:
                await c.post("/v1/chat/completions", json=stream, timeout=0.05)
            except httpx.TimeoutException:
                return "gave-up"
            return "done"

        kinds = [answered, streamed, left_mid_stream, gave_up] * (ROUND // 4)
        out: list[str] = []
        for i in range(0, len(kinds), 20):
            out += await asyncio.gather(*(k() for k in kinds[i : i + 20]))
        return out


def soak(start_gateway: GatewayFactory, mock: Server, requests: int) -> None:
    gw = start_gateway(config(mock.url), env={"TOLLWAY_LOG_LEVEL": "WARNING"})
    mock_port = int(mock.url.rsplit(":", 1)[1])
    rounds = max(requests // ROUND, 2)
    asyncio.run(one_round(gw.url))  # warm: pools, caches, tokenizer tables
    time.sleep(1.0)
    base = resources(gw, mock_port)
    rss: list[float] = []
    for _ in range(rounds):
        outcomes = asyncio.run(one_round(gw.url))
        assert outcomes.count("200") == ROUND // 4, outcomes
        assert "cut" not in outcomes, outcomes
        rss.append(resources(gw, mock_port)["rss_mb"])
    time.sleep(2.0)  # streams the clients left are cancelled, settled and logged
    end = resources(gw, mock_port)
    n = len(rss)
    mean_x, mean_y = (n - 1) / 2, sum(rss) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(rss)) / max(
        sum((x - mean_x) ** 2 for x in range(n)), 1e-9
    )
    print(f"\nsoak: {rounds * ROUND} requests; baseline {base}; after {end}; RSS slope "
          f"{slope * 1000 / ROUND:.3f} MB per 1000 requests")  # fmt: skip
    # Every connection the clients left and every upstream call they cancelled is closed.
    assert end["fds"] <= base["fds"] + 4, (base, end)
    assert end["upstream"] <= max(base["upstream"], 20), (base, end)
    assert end["threads"] <= base["threads"] + 2, (base, end)


def test_soak_smoke(start_gateway: GatewayFactory, streaming_mock: Server) -> None:
    soak(start_gateway, streaming_mock, 600)


@pytest.mark.slow
@pytest.mark.skipif(
    "TOLLWAY_SOAK_REQUESTS" not in os.environ,
    reason="the long soak: TOLLWAY_SOAK_REQUESTS=1000000 pytest -m slow -s tests/test_soak.py",
)
def test_soak(start_gateway: GatewayFactory, streaming_mock: Server) -> None:
    soak(start_gateway, streaming_mock, int(os.environ.get("TOLLWAY_SOAK_REQUESTS", "100000")))
