"""The embedded request log's store stalled: its ingester (the one process that writes the DuckDB
file) is stopped with SIGSTOP while requests go on. Requests are unaffected (the workers only
spool files), nothing is lost, and once it continues every row reaches the log by itself."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
from conftest import CLIENT_KEY, GatewayFactory, Server, gateway_config

ADMIN_KEY = "admin-key-0123456789"


def ingester(gw: Server, timeout: float = 15.0) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in psutil.Process(gw.proc.pid).children(recursive=True):
            try:
                if "tollway.logs.ingest" in " ".join(p.cmdline()):
                    return p
            except psutil.Error:
                continue
        time.sleep(0.1)
    raise AssertionError("no request-log ingester was started")


def logged_ids(gw: Server) -> set[str]:
    r = httpx.get(f"{gw.url}/v1/analytics/requests", params={"limit": "1000"},
                  headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    return {row["request_id"] for row in r.json()["data"]}


def test_a_stalled_ingester_loses_nothing_and_catches_up(
    start_gateway: GatewayFactory, mock_upstream: Server, tmp_path: Path
) -> None:
    log = tmp_path / "requests.duckdb"
    config = gateway_config(mock_upstream.url, "").replace(
        "  max_body_bytes: 65536\n",
        f"  max_body_bytes: 65536\nrequest_logs: {{path: {log}, flush_interval_ms: 100}}\n",
    )
    config = config.replace(
        "keys:\n",
        f'keys:\n  - {{name: ops, key: {ADMIN_KEY}, subject: "user:ops", admin: true}}\n',
        1,
    )
    gw = start_gateway(config)
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    body = {"model": "mock/small", "messages": [{"role": "user", "content": "hi"}]}

    def send(rid: str) -> None:
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=body,
                       headers={**headers, "x-request-id": rid}, timeout=10)  # fmt: skip
        assert r.status_code == 200, r.text

    send("before")
    proc = ingester(gw)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        stalled = [f"stalled-{i}" for i in range(40)]
        for rid in stalled:
            send(rid)  # answered while the store cannot be written
        time.sleep(1.0)  # the workers spool them
        spool = Path(f"{log}.spool")
        waiting = [p for p in spool.iterdir() if p.suffix in (".rec", ".ndjson")]
        assert waiting, "nothing waits in the spool"
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 20
    ids: set[str] = set()
    while time.monotonic() < deadline:
        ids = logged_ids(gw)
        if set(stalled) <= ids:
            break
        time.sleep(0.3)
    assert set(stalled) <= ids, f"missing after the stall: {sorted(set(stalled) - ids)[:5]}"
