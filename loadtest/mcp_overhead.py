"""What a `tools/call` through the MCP gateway costs over calling the tool server directly.

    python loadtest/mcp_overhead.py [--calls 2000] [--smoke]

Starts the mock (whose `POST /mcp` is a tiny MCP tool server) and `tollway serve` with one
`mcp-server` pointing at it, then makes the same `tools/call` sequentially over one
keep-alive connection: directly to the mock, and through `/mcp/demo` (with the gateway's
auth, policy and metrics). It also times the official `mcp` SDK client (`ClientSession`
over `streamablehttp_client`) against the direct mock, the client the gateway would use
upstream if it did not speak JSON-RPC over aiohttp itself. Prints mean/p50/p99 per call.
Loopback only; every process it starts is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

KEY = "bench-key-0123456789"
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": 1, "b": 2}}}  # fmt: skip


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def _config(mock: str) -> str:
    return f"""
type: mcp-server
name: demo
url: {mock}/mcp
---
type: gateway-keys
keys: [{{name: bench, key: {KEY}, subject: "user:bench", allowed_tools: ["demo/*"]}}]
"""


def _stats(label: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return f"{label:<34} mean {statistics.fmean(ms):6.3f} ms  p50 {p(0.5):6.3f}  p99 {p(0.99):6.3f}"


async def _raw(url: str, n: int, headers: dict[str, str]) -> list[float]:
    out = []
    async with aiohttp.ClientSession() as s:
        for i in range(n + 50):
            t0 = time.perf_counter()
            async with s.post(url, json=CALL, headers=headers) as r:
                body = await r.json()
            assert "result" in body, body
            if i >= 50:  # warm-up excluded
                out.append((time.perf_counter() - t0) * 1000)
    return out


async def _sdk(url: str, n: int) -> list[float]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    out = []
    async with (
        streamablehttp_client(url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        for i in range(n + 50):
            t0 = time.perf_counter()
            await session.call_tool("add", {"a": 1, "b": 2})
            if i >= 50:
                out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--smoke", action="store_true", help="100 calls, to check it runs")
    args = ap.parse_args()
    n = 100 if args.smoke else args.calls
    mock_port, gw_port = _port(), _port()
    mock = f"http://127.0.0.1:{mock_port}"
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "gateway.yaml"
        cfg.write_text(_config(mock))
        try:
            for cmd in (
                [sys.executable, "-m", "tollway.mock", "--port", str(mock_port)],
                ["tollway", "serve", "--config", str(cfg), "--port", str(gw_port)],
            ):
                quiet = subprocess.DEVNULL
                proc = subprocess.Popen(cmd, stdout=quiet, stderr=quiet, start_new_session=True)
                procs.append(proc)
            _wait(f"{mock}/healthz")
            _wait(f"http://127.0.0.1:{gw_port}/readyz")
            auth = {"authorization": f"Bearer {KEY}"}
            direct = asyncio.run(_raw(f"{mock}/mcp", n, {}))
            through = asyncio.run(_raw(f"http://127.0.0.1:{gw_port}/mcp/demo", n, auth))
            sdk = asyncio.run(_sdk(f"{mock}/mcp", n))
        finally:
            for p in procs:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(10)
    print(f"{n} sequential tools/call each (after 50 warm-up calls):")
    print(_stats("direct to the tool server (aiohttp)", direct))
    print(_stats("through the gateway (aiohttp)", through))
    print(_stats("direct, official mcp SDK client", sdk))
    added = statistics.median(through) - statistics.median(direct)
    sdk_added = statistics.median(sdk) - statistics.median(direct)
    print(f"gateway adds {added:.3f} ms per call at p50; the SDK client adds {sdk_added:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
