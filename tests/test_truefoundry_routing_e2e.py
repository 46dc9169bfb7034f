"""TrueFoundry's routing document, pasted verbatim, routes by metadata alone (issue 15, item 1)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import CLIENT_KEY, Gateways, Server

# As the TrueFoundry docs print it: the second rule's `when` has metadata and no models.
TRUEFOUNDRY_ROUTING = """\
name: engineering-agent-routing
type: gateway-load-balancing-config
rules:
  - id: 'simple-repo-questions'
    type: priority-based-routing
    when:
      models: ['prod/engineering-assistant']
      metadata: {workflow: 'repo-understanding'}
    load_balance_targets:
      - target: openai-main/gpt-4o-mini
        priority: 0
        retry_config: {attempts: 2, delay: 100, on_status_codes: ['429', '500']}
        fallback_status_codes: ['429', '500', '502', '503']
      - target: anthropic-main/claude-sonnet
        priority: 1
  - id: 'security-critical-review'
    type: priority-based-routing
    when: {metadata: {workflow: 'security-review'}}
    load_balance_targets:
      - {target: anthropic-main/claude-opus, priority: 0}
      - {target: openai-main/gpt-4.1, priority: 1}
"""


def config(mock: str) -> str:
    return f"""
type: provider-account
name: openai-main
provider: openai-compatible
base_url: {mock}/v1
models: [gpt-4o-mini, gpt-4.1]
---
type: provider-account
name: anthropic-main
provider: anthropic
base_url: {mock}/v1
api_key: sk-ant-test
models: [claude-sonnet, claude-opus]
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
---
{TRUEFOUNDRY_ROUTING}"""


@pytest.fixture(scope="module")
def client(mock_upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    gateways = Gateways(tmp_path_factory.mktemp("tfy-routing"))
    try:
        gw = gateways.start(config(mock_upstream.url))
        yield openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    finally:
        gateways.close()


def ask(client: openai.OpenAI, model: str, workflow: str | None) -> Any:
    headers = {} if workflow is None else {"X-TFY-METADATA": json.dumps({"workflow": workflow})}
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], extra_headers=headers
    )


def test_the_documented_file_passes_check_config(mock_upstream: Server, tmp_path: Path) -> None:
    path = tmp_path / "tfy.yaml"
    path.write_text(config(mock_upstream.url))
    done = subprocess.run(
        ["tollway", "check-config", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("model", "workflow", "resolved", "rule"),
    [
        (
            "prod/engineering-assistant",
            "repo-understanding",
            "openai-main/gpt-4o-mini",
            "simple-repo-questions",
        ),
        # First match wins: the virtual model's rule does not match, the metadata-only one does.
        (
            "prod/engineering-assistant",
            "security-review",
            "anthropic-main/claude-opus",
            "security-critical-review",
        ),
        # A metadata-only rule applies to whatever model the request names.
        ("openai-main/gpt-4o-mini", "security-review", "anthropic-main/claude-opus", None),
        ("any-model-name", "security-review", "anthropic-main/claude-opus", None),
        # No rule matches: a target is called directly.
        ("openai-main/gpt-4.1", "repo-understanding", "openai-main/gpt-4.1", ""),
        ("openai-main/gpt-4.1", None, "openai-main/gpt-4.1", ""),
    ],
)
def test_routes_by_metadata(
    client: openai.OpenAI, model: str, workflow: str | None, resolved: str, rule: str | None
) -> None:
    raw = ask(client, model, workflow)
    assert raw.headers["x-tfy-resolved-model"] == resolved
    assert raw.parse().choices[0].message.content
    applied = raw.headers.get("x-tfy-applied-configurations")
    if rule == "":
        assert applied is None
    else:
        want = rule or "security-critical-review"
        assert json.loads(applied or "{}").get("load_balancing") == want


@pytest.mark.parametrize(
    ("model", "workflow"),
    [
        ("any-model-name", "repo-understanding"),
        ("any-model-name", None),
        ("prod/engineering-assistant", "code-review"),
    ],
)
def test_no_matching_rule_and_no_target_is_404(
    client: openai.OpenAI, model: str, workflow: str | None
) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        ask(client, model, workflow)
    body = e.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found"
    assert body["param"] == "model"
