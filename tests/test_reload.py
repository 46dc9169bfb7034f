"""Hot reload through a real `tollway serve`: edits apply within 5 s, bad edits are refused."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
from conftest import GatewayFactory, Server

KEEP = "keep-key-0123456789"
REVOKE = "revoke-key-0123456789"


def config(mock: str, keys: list[str], models: str = "[gpt-4o-mini, mock-slow-1500]") -> str:
    entries = "\n".join(
        f"  - {{name: k{i}, key: {k}, subject: 'user:u{i}'}}" for i, k in enumerate(keys)
    )
    return (
        "type: provider-account\nname: m\nprovider: openai-compatible\n"
        f"base_url: {mock}/v1\nmodels: {models}\n---\n"
        f"type: gateway-keys\nkeys:\n{entries}\n"
    )


def chat(gw: Server, key: str, model: str = "m/gpt-4o-mini") -> httpx.Response:
    return httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )


def wait_for(pred: Any, timeout: float = 5.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if pred():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not true within {timeout}s")


def test_revoking_a_key_by_editing_the_file_takes_effect_within_5s(
    start_gateway: GatewayFactory, mock_upstream: Server, tmp_path: Path
) -> None:
    gw = start_gateway(config(mock_upstream.url, [KEEP, REVOKE]), workers=2)
    path = Path(gw.proc.args[3])  # type: ignore[index]
    assert chat(gw, REVOKE).status_code == 200

    # A slow request in flight when the config changes still finishes.
    slow: dict[str, int] = {}
    t = threading.Thread(
        target=lambda: slow.update(s=chat(gw, KEEP, "m/mock-slow-1500").status_code)
    )
    t.start()
    time.sleep(0.3)
    path.write_text(config(mock_upstream.url, [KEEP]))
    # Both workers must have reloaded: every request with the revoked key is refused.
    wait_for(lambda: all(chat(gw, REVOKE).status_code == 401 for _ in range(6)))
    assert chat(gw, KEEP).status_code == 200
    t.join(10)
    assert slow == {"s": 200}


def test_an_invalid_edit_keeps_the_old_config_and_logs_why(
    start_gateway: GatewayFactory, mock_upstream: Server
) -> None:
    gw = start_gateway(config(mock_upstream.url, [KEEP]))
    path = Path(gw.proc.args[3])  # type: ignore[index]
    path.write_text(config(mock_upstream.url, [KEEP]).replace("subject:", "subjekt:"))
    time.sleep(2.5)
    assert chat(gw, KEEP).status_code == 200
    # A later valid edit still applies: the watcher survived the bad one.
    path.write_text(config(mock_upstream.url, [KEEP], models="[gpt-4o]"))
    wait_for(lambda: chat(gw, KEEP, "m/gpt-4o").status_code == 200)
    assert chat(gw, KEEP).status_code == 404
    out = gw.output()
    assert "rejected; still serving the previous config" in out
    assert "keys[0].subjekt: unknown field" in out
    assert KEEP not in out, "a client key leaked into the log"
