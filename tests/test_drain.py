"""Graceful drain: SIGTERM during a long stream, as a load balancer sees it."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import CLIENT_KEY, Server, free_port, mock_server, spawn, stop, wait_http


@pytest.fixture
def slow_mock() -> Iterator[Server]:
    """A mock streaming 40 tokens 100 ms apart: a 4-second stream."""
    with mock_server("--itl-ms", "100", "--tokens", "40") as server:
        yield server


def test_sigterm_drains_then_finishes_the_stream_and_exits_0(
    slow_mock: Server, tmp_path: Path
) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text(
        "type: gateway-settings\nserver: {drain_delay_s: 2, shutdown_grace_s: 20}\n---\n"
        "type: provider-account\nname: m\nprovider: openai-compatible\n"
        f"base_url: {slow_mock.url}/v1\nmodels: [gpt-4o-mini]\n---\n"
        f"type: gateway-keys\nkeys: [{{name: k, key: {CLIENT_KEY}, subject: 'user:u'}}]\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = spawn(["tollway", "serve", "--config", str(cfg), "--port", str(port)])
    try:
        wait_http(f"{url}/readyz", proc)
        chunks: list[bytes] = []
        first = threading.Event()

        def read_stream() -> None:
            body = {"model": "m/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            with httpx.stream(
                "POST",
                f"{url}/v1/chat/completions",
                json={**body, "stream": True},
                headers={"authorization": f"Bearer {CLIENT_KEY}"},
                timeout=30,
            ) as r:
                for chunk in r.iter_bytes():
                    chunks.append(chunk)
                    first.set()

        reader = threading.Thread(target=read_stream)
        reader.start()
        assert first.wait(10)
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)  # the supervisor only, as an orchestrator does

        while httpx.get(f"{url}/readyz").status_code != 503:
            assert time.monotonic() - sent < 1.0, "/readyz did not turn 503 at once"
            time.sleep(0.05)
        # Inside the drain window the listener still serves.
        assert httpx.get(f"{url}/healthz").status_code == 200
        # After it, new connections are refused while the stream goes on.
        time.sleep(max(0.0, sent + 2.8 - time.monotonic()))
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=2)
        assert reader.is_alive(), "the stream should still be running"

        reader.join(20)
        body = b"".join(chunks)
        assert body.rstrip().endswith(b"data: [DONE]"), body[-200:]
        assert body.count(b'"content":') >= 40
        assert proc.wait(20) == 0
    finally:
        stop(proc)
