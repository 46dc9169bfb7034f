"""Dependency faults: Redis and the OTLP collector refused, paused, slow, blackholed, stopped
and restarted behind a TCP fault proxy, while a real `tollway serve` takes requests.

Requests must not notice (every one answers 200, none hangs), each outage is counted in
`/metrics`, and sync or export resumes by itself once the dependency is back. The default
run holds each fault for a second; the full run (`pytest -m slow tests/test_dependency_faults.py
-s` with `TOLLWAY_FULL=1`, see docs/deploy.md) holds each for 30 s and prints p50/p99 per phase.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from statistics import quantiles
from typing import Any

import httpx
import pytest
from conftest import CLIENT_KEY, GatewayFactory, RedisServer, Server
from faultproxy import FaultProxy
from test_telemetry_e2e import Receiver, samples

BODY = {"model": "m/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
SHORT_S, FULL_S = 1.0, 30.0
full_run = pytest.mark.skipif(
    not os.environ.get("TOLLWAY_FULL"),
    reason="the full run: TOLLWAY_FULL=1 pytest -m slow -s tests/test_dependency_faults.py",
)


def config(mock: str, settings: str) -> str:
    return f"""
type: gateway-settings
{settings}
---
type: provider-account
name: m
provider: openai-compatible
base_url: {mock}/v1
models: [gpt-4o-mini]
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
---
type: gateway-rate-limiting-config
rules: [{{id: roomy, when: {{}}, limit_to: 100000, unit: requests_per_minute}}]
"""


def traffic(http: httpx.Client, seconds: float) -> list[float]:
    """Requests one after another for `seconds`: all answered 200; their latencies."""
    took = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        r = http.post("/v1/chat/completions", json=BODY)
        took.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
        time.sleep(0.01)
    # Nothing on the request path waits on a dependency: no request waits a timeout out.
    assert max(took) < 1.0, f"a request took {max(took):.2f} s"
    return took


def p50_p99(took: list[float]) -> str:
    q = quantiles(took, n=100)
    return f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms over {len(took)} requests"


def wait_until(cond: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        assert time.monotonic() < deadline, "did not recover by itself"
        time.sleep(0.05)
    return value


def metric(gw: Server, name: str, **labels: str) -> float:
    return samples(httpx.get(f"{gw.url}/metrics", timeout=5).text, name, **labels)


def redis_faults(
    start_gateway: GatewayFactory, mock: Server, redis: RedisServer, seconds: float
) -> None:
    with FaultProxy(redis.port) as proxy:
        state = (
            f'state: {{backend: redis, redis_url: "redis://127.0.0.1:{proxy.port}/0", '
            "sync_interval_ms: 100, redis_timeout_ms: 200}"
        )
        gw = start_gateway(config(mock.url, state))
        http = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {CLIENT_KEY}"})

        def synced() -> float:
            return metric(gw, "llm_gateway_state_sync_total", result="ok")

        faults: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
            "refused": (lambda: proxy.set("refuse"), lambda: proxy.set("forward")),
            "slow (400 ms a chunk)": (lambda: proxy.set("slow", 0.4), lambda: proxy.set("forward")),
            "paused": (lambda: proxy.set("pause"), lambda: proxy.set("forward")),
            "blackholed": (lambda: proxy.set("blackhole"), lambda: proxy.set("forward")),
            "SIGSTOP": (
                lambda: redis.signal(signal.SIGSTOP),
                lambda: redis.signal(signal.SIGCONT),
            ),
            "restarted empty": (redis.kill, redis.start),
        }
        try:
            wait_until(synced)
            print(f"\nRedis healthy: {p50_p99(traffic(http, seconds))}")
            for name, (break_it, mend_it) in faults.items():
                before = synced()
                break_it()
                took = traffic(http, seconds)
                mend_it()
                # Sync resumes by itself: several good syncs after the dependency is back.
                wait_until(lambda b=before: synced() > b + 3)  # type: ignore[misc]
                print(f"Redis {name}: {p50_p99(took)}")
            outages = metric(gw, "llm_gateway_state_sync_outages_total")
            assert outages == len(faults), outages
            assert metric(gw, "llm_gateway_state_sync_total", result="failed") >= len(faults)
            assert redis.client().zcard("tollway:replicas") == 1, "back in the replica count"
        finally:
            http.close()


def test_redis_faults_do_not_touch_requests_and_sync_resumes(
    start_gateway: GatewayFactory, mock_upstream: Server, redis_server: RedisServer
) -> None:
    redis_faults(start_gateway, mock_upstream, redis_server, SHORT_S)


@pytest.mark.slow
@full_run
def test_redis_faults_full(
    start_gateway: GatewayFactory, mock_upstream: Server, redis_server: RedisServer
) -> None:
    redis_faults(start_gateway, mock_upstream, redis_server, FULL_S)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    rx.thread.start()
    try:
        yield rx
    finally:
        rx.release.set()
        rx.server.shutdown()
        rx.server.server_close()


def collector_faults(
    start_gateway: GatewayFactory, mock: Server, receiver: Receiver, seconds: float
) -> None:
    port = receiver.server.server_address[1]
    path = "/f/v1/traces"
    with FaultProxy(int(port)) as proxy:
        otel = (
            f"otel: {{traces_endpoint: 'http://127.0.0.1:{proxy.port}{path}', "
            "schedule_delay_ms: 50, export_timeout_ms: 500, queue_size: 20, batch_size: 10}"
        )
        gw = start_gateway(config(mock.url, otel), env={"TOLLWAY_LOG_LEVEL": "WARNING"})
        http = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {CLIENT_KEY}"})
        try:
            print(f"\ncollector healthy: {p50_p99(traffic(http, seconds))}")
            wait_until(lambda: receiver.requests(path))
            for mode in ("blackhole", "refuse"):
                dropped = metric(gw, "llm_gateway_span_dropped_total")
                proxy.set(mode)
                took = traffic(http, seconds)
                print(f"collector {mode}: {p50_p99(took)}")
                # Spans that could not go are dropped and counted, never waited for.
                wait_until(lambda d=dropped: metric(gw, "llm_gateway_span_dropped_total") > d)  # type: ignore[misc]
                proxy.set("forward")
                got = len(receiver.requests(path))
                traffic(http, 0.3)
                wait_until(lambda g=got: len(receiver.requests(path)) > g)  # type: ignore[misc]
            sent = metric(gw, "llm_gateway_requests_total", status="200")
            assert sent >= 3, "metrics stay exact whatever the collector does"
        finally:
            http.close()


def test_a_blackholed_or_refused_collector_does_not_touch_requests(
    start_gateway: GatewayFactory, mock_upstream: Server, receiver: Receiver
) -> None:
    collector_faults(start_gateway, mock_upstream, receiver, SHORT_S)


@pytest.mark.slow
@full_run
def test_collector_faults_full(
    start_gateway: GatewayFactory, mock_upstream: Server, receiver: Receiver
) -> None:
    collector_faults(start_gateway, mock_upstream, receiver, FULL_S)
