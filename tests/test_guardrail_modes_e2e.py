"""Guardrail rollout modes by both spellings, end to end with a webhook that fails or refuses.

`mode: audit | enforce | strict` (TrueFoundry's rollout names) and `enforcing_strategy:
audit | enforce_but_ignore_on_error | enforce` are one setting: audit never blocks, enforce
blocks on a verdict but lets a request through when the guardrail itself fails, strict blocks
on both (issue 15, item 7).
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import CLIENT_KEY, Gateways, Server, free_port

# (guardrail setting, blocks a refusal, blocks when the webhook fails)
MODES = [
    ("mode: audit", False, False),
    ("mode: enforce", True, False),
    ("mode: strict", True, True),
    ("enforcing_strategy: audit", False, False),
    ("enforcing_strategy: enforce_but_ignore_on_error", True, False),
    ("enforcing_strategy: enforce", True, True),
]


class _Hook(BaseHTTPRequestHandler):
    """Refuses prompts saying 'forbidden'; fails with HTTP 500 on prompts saying 'broken'."""

    def do_POST(self) -> None:
        text = self.rfile.read(int(self.headers["content-length"])).decode()
        out = json.dumps({"verdict": "forbidden" not in text}).encode()
        self.send_response(500 if "broken" in text else 200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def hook() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", free_port()), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/check"
    finally:
        server.shutdown()
        server.server_close()


def config(mock: str, hook: str) -> str:
    guardrails = "".join(
        f"  - {{name: hook-{i}, kind: webhook, url: '{hook}', timeout_ms: 2000, {setting}}}\n"
        for i, (setting, _, _) in enumerate(MODES)
    )
    rules = "".join(
        f"  - {{id: r{i}, when: {{metadata: {{g: '{i}'}}}}, llm_input_guardrails: [hook-{i}]}}\n"
        for i in range(len(MODES))
    )
    return f"""
type: provider-account
name: m
provider: openai-compatible
base_url: {mock}/v1
models: [gpt-4o-mini]
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
---
type: gateway-guardrails-config
name: rollout
guardrails:
{guardrails}rules:
{rules}"""


@pytest.fixture(scope="module")
def client(
    mock_upstream: Server, hook: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[openai.OpenAI]:
    gateways = Gateways(tmp_path_factory.mktemp("guardrail-modes"))
    try:
        gw = gateways.start(config(mock_upstream.url, hook))
        yield openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    finally:
        gateways.close()


@pytest.mark.parametrize(("index", "mode"), list(enumerate(MODES)), ids=[m[0] for m in MODES])
def test_a_refusal_and_a_failure_in_each_mode(
    client: openai.OpenAI, index: int, mode: tuple[str, bool, bool]
) -> None:
    _, blocks_refusal, blocks_failure = mode
    headers = {"X-TFY-METADATA": json.dumps({"g": str(index)})}
    for text, blocks in (
        ("hello", False),
        ("a forbidden question", blocks_refusal),
        ("a broken hook", blocks_failure),
    ):
        messages: Any = [{"role": "user", "content": text}]
        if not blocks:
            answer = client.chat.completions.create(
                model="m/gpt-4o-mini", messages=messages, extra_headers=headers
            )
            assert answer.choices[0].message.content, text
            continue
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model="m/gpt-4o-mini", messages=messages, extra_headers=headers
            )
        err = info.value.response.json()["error"]
        assert err["code"] == "guardrail_blocked", text
        assert f"'hook-{index}'" in err["message"]


def test_giving_both_spellings_is_an_error_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "both.yaml"
    path.write_text(
        "type: gateway-guardrails-config\nguardrails:\n"
        "  - {name: h, kind: webhook, url: 'http://127.0.0.1:9/', "
        "mode: strict, enforcing_strategy: enforce}\n"
    )
    done = subprocess.run(
        ["tollway", "check-config", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "guardrails[0].mode: give either mode (audit|enforce|strict) or enforcing_strategy" in (
        done.stdout
    )
