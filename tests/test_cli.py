"""The `tollway` command as a newcomer uses it: the demo, hash-key, a bad config."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import Server, free_port, output_of, spawn, stop, wait_http


def test_hash_key_prints_the_config_form() -> None:
    out = subprocess.run(
        ["tollway", "hash-key", "-"], input="my-key\n", capture_output=True, text=True, timeout=30
    )
    assert out.stdout.strip() == "sha256:" + hashlib.sha256(b"my-key").hexdigest()


def test_demo_serves_and_its_printed_openai_example_works() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TOLLWAY_CONFIG"}
    proc = spawn(["tollway", "serve", "--port", str(port)], env)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc)
        deadline = time.monotonic() + 10
        while "python -c" not in output_of(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        banner = output_of(proc)
        example = re.search(r'python -c "(.+)"', banner)
        assert example, banner
        ran = subprocess.run(
            [sys.executable, "-c", example.group(1)], capture_output=True, text=True, timeout=60
        )
        assert ran.returncode == 0, ran.stderr
        assert len(ran.stdout.strip()) > 0
        assert "curl" in banner and "tollway-demo-key" in banner
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            headers={"authorization": "Bearer tollway-demo-key"},
            json={"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        # The banner's tool call through the demo MCP server.
        assert "/mcp/demo" in banner
        params = {"name": "get_weather", "arguments": {"city": "Paris"}}
        r = httpx.post(
            f"http://127.0.0.1:{port}/mcp/demo",
            headers={"authorization": "Bearer tollway-demo-key"},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params},
        )
        assert r.json()["result"]["content"] == [
            {"type": "text", "text": "Sunny and 21 C in Paris"}
        ]
    finally:
        stop(proc)


def test_serve_refuses_an_invalid_config_with_its_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("type: gateway-keys\nkeys: [{name: k}]\n")
    r = subprocess.run(
        ["tollway", "serve", "--config", str(bad), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert "keys[0]: one of key_sha256 or key is required" in r.stderr
    assert "keys[0].subject: required field is missing" in r.stderr


def test_gateway_with_two_workers_serves(mock_upstream: Server, tmp_path: Path) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text(
        "type: provider-account\nname: m\nprovider: openai-compatible\n"
        f"base_url: {mock_upstream.url}/v1\nmodels: [gpt-4o-mini]\n---\n"
        "type: gateway-keys\nkeys: [{name: k, key: key-12345678, subject: 'user:u'}]\n"
    )
    port = free_port()
    proc = spawn(["tollway", "serve", "--config", str(cfg), "--port", str(port), "--workers", "2"])
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc)
        for _ in range(20):
            r = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                headers={"authorization": "Bearer key-12345678"},
                json={"model": "m/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
            )
            assert r.status_code == 200
    finally:
        stop(proc)
