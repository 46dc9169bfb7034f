#!/usr/bin/env python3
"""The long soak: `python loadtest/soak.py --requests 1000000` against `tollway serve` with
every feature of loadtest/gateway.yaml on (routing, rate limit, metrics, OTLP traces to a sink,
the request log). oha sends the volume in steps (3 in 4 non-streamed, 1 in 4 streamed) while a
Python client keeps opening streams and leaving them in the middle. After each step the
worker's RSS, open files, threads and upstream connections are read (psutil); at the end the
RSS slope over the steps and where each resource ended against its baseline are printed.
`tests/test_soak.py` is the short version run by CI.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.features import resolve
from harness.oha import Oha, OhaFlags, find_oha, oha_threads
from harness.procs import Service, Services
from harness.runner import MODEL, Harness, chat_body

HERE = Path(__file__).resolve().parent


def worker(service: Service) -> psutil.Process:
    """The Granian worker: the tree's busiest process (not the ingester, not supervisors)."""
    best, found = -1.0, None
    for proc in service.tree():
        try:
            if "tollway.logs.ingest" in " ".join(proc.cmdline()):
                continue
            t = proc.cpu_times()
        except psutil.Error:
            continue
        if t.user + t.system > best:
            best, found = t.user + t.system, proc
    assert found is not None
    return found


def sample(proc: psutil.Process, upstream_port: int) -> dict[str, float]:
    conns = [c for c in proc.net_connections("tcp") if c.raddr and c.raddr.port == upstream_port]
    return {
        "rss_mb": proc.memory_info().rss / 2**20,
        "fds": proc.num_fds(),
        "threads": proc.num_threads(),
        "upstream_conns": len(conns),
    }


def leave_mid_stream(url: str, headers: dict[str, str], body: bytes, stop: threading.Event,
                     counter: list[int]) -> None:  # fmt: skip
    """Opens streams and leaves after the first chunk, 4 at a time, until `stop`."""

    async def one(client: httpx.AsyncClient) -> None:
        async with client.stream("POST", url, content=body, headers=headers) as r:
            async for _ in r.aiter_raw():
                break  # leave after the first chunk
        counter[0] += 1

    async def run() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            while not stop.is_set():
                await asyncio.gather(*(one(client) for _ in range(4)), return_exceptions=True)

    asyncio.run(run())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1_000_000)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--config", type=Path, default=HERE / "gateway.yaml")
    a = p.parse_args()
    args = SimpleNamespace(
        stream=False, mock_workers=2, load_cpus="1", sut_cpus="0", workers=1, rounds=1
    )
    path = find_oha(install=False)
    oha = Oha(path, OhaFlags.detect(path), "1", oha_threads("1"))
    log_dir = HERE / "results" / "soak-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with Services(log_dir) as services:
        config = resolve(a.config, [], log_dir)
        h = Harness(args, services, oha, secrets.token_urlsafe(16), model=config.model or MODEL)  # type: ignore[arg-type]
        mock = h.start_mock()
        if config.needs_otlp_sink:
            h.start_sink()
        gw = h.start_gateway(config)
        url = gw.url + "/v1/chat/completions"
        stream_body = chat_body(True, config.model or MODEL)
        warm = max(a.requests // 50, 2000)
        oha.run(url, h.body, h.headers, concurrency=a.concurrency, requests=warm)
        proc = worker(gw)
        base = sample(proc, mock.port)
        print(f"baseline after {warm:,} requests: {base}")
        stop, left = threading.Event(), [0]
        leaver = threading.Thread(
            target=leave_mid_stream, args=(url, h.headers, stream_body, stop, left), daemon=True
        )
        leaver.start()
        per_step = a.requests // a.steps
        rss, sent, failed = [base["rss_mb"]], 0, 0
        for _ in range(a.steps):
            plain = oha.run(url, h.body, h.headers, concurrency=a.concurrency,
                            requests=per_step * 3 // 4)  # fmt: skip
            streamed = oha.run(url, stream_body, h.headers, concurrency=a.concurrency,
                               requests=per_step - per_step * 3 // 4)  # fmt: skip
            sent += per_step
            failed += plain.failed + streamed.failed
            now = sample(proc, mock.port)
            rss.append(now["rss_mb"])
            print(f"{sent:>9,} requests ({left[0]:,} left mid-stream, {failed} failed): {now}")
        stop.set()
        leaver.join(60)
        oha.run(url, h.body, h.headers, concurrency=2, requests=200)  # let pools settle
        end = sample(proc, mock.port)
        n = len(rss)
        mean_x, mean_y = (n - 1) / 2, sum(rss) / n
        slope = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(rss)) / max(
            sum((x - mean_x) ** 2 for x in range(n)), 1e-9
        )
        print(f"\nsoak: {sent:,} requests by oha ({failed} failed) and {left[0]:,} streams left "
              f"mid-way; baseline {base}; end {end}")  # fmt: skip
        print(f"RSS slope {slope / per_step * 1e6:.3f} MB per million requests "
              f"({rss[0]:.1f} -> {rss[-1]:.1f} MB over the steps)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
