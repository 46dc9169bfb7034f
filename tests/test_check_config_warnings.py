"""`tollway check-config` warns about config that is valid but surely not meant (issue 15,
item 10): exit 0, one `warning: <file> (document N, type): <path>: <message>` line each; the
server prints the same warnings at start and logs them on reload."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from conftest import GatewayFactory, Server, output_of

ACCOUNT = """\
type: provider-account
name: oa
provider: openai-compatible
base_url: {mock}/v1
models:
  - gpt-4o-mini
  - house-model
  - {{name: priced, model_id: house-2, input_cost_per_million: 1, output_cost_per_million: 2}}
---
type: gateway-keys
keys: [{{name: k, key: client-key-0123456789, subject: "user:a"}}]
"""


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return subprocess.run(
        ["tollway", "check-config", str(path)], capture_output=True, text=True, timeout=60
    )


def warnings_of(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, done.stdout + done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith("warning: ")]


def test_a_clean_config_has_no_warnings(tmp_path: Path) -> None:
    budget = """---
type: gateway-budget-config
rules:
  - {id: b, when: {models: [oa/gpt-4o-mini, oa/priced]}, limit_to: 5, unit: cost_per_day}
"""
    done = check(tmp_path, ACCOUNT.format(mock="http://127.0.0.1:9") + budget)
    assert warnings_of(done) == []
    assert "OK (3 targets, 1 keys)" in done.stdout


def test_a_budget_over_a_model_without_a_price(tmp_path: Path) -> None:
    budget = """---
type: gateway-load-balancing-config
rules:
  - id: assistant
    type: priority-based-routing
    when: {models: [assistant]}
    load_balance_targets: [{target: oa/priced}, {target: oa/house-model}]
---
type: gateway-budget-config
rules:
  - {id: via-virtual, when: {models: [assistant]}, limit_to: 5, unit: cost_per_day}
  - {id: direct, when: {models: [oa/gpt-4o-mini]}, limit_to: 5, unit: cost_per_day}
"""
    done = check(tmp_path, ACCOUNT.format(mock="http://127.0.0.1:9") + budget)
    path = tmp_path / "gateway.yaml"
    assert warnings_of(done) == [
        f"warning: {path} (document 4, gateway-budget-config): rules[0]: budget 'via-virtual' "
        "covers models with no known price, whose requests cost $0 against it: oa/house-model "
        "(give the model entry input_cost_per_million and output_cost_per_million)"
    ]
    assert "1 warning(s)" in done.stdout


def test_a_model_name_that_matches_nothing(tmp_path: Path) -> None:
    limits = """---
type: gateway-rate-limiting-config
rules:
  - {id: typo, when: {models: [oa/gpt-4o-minii]}, limit_to: 5, unit: requests_per_minute}
"""
    done = check(tmp_path, ACCOUNT.format(mock="http://127.0.0.1:9") + limits)
    (line,) = warnings_of(done)
    assert line.endswith(
        "rules[0].when.models[0]: 'oa/gpt-4o-minii' is no configured model or virtual model, "
        "so it never matches (did you mean 'oa/gpt-4o-mini'?)"
    )


def test_a_guardrail_no_rule_reaches_and_a_shadowed_rule(tmp_path: Path) -> None:
    guardrails = """---
type: gateway-guardrails-config
guardrails:
  - {name: pii, kind: pii}
  - {name: spare, kind: secrets}
rules:
  - {id: everyone, when: {}, llm_input_guardrails: [pii]}
  - {id: alice, when: {subjects: ["user:a"]}, llm_input_guardrails: [pii, spare]}
"""
    done = check(tmp_path, ACCOUNT.format(mock="http://127.0.0.1:9") + guardrails)
    found = warnings_of(done)
    assert len(found) == 2, found
    assert found[0].endswith(
        "rules[1]: never applies: rule 'everyone' comes first and matches every request "
        "this one matches (the first matching rule wins)"
    )
    assert found[1].endswith(
        "guardrails[1]: guardrail 'spare' is in no rule that can apply, so it runs only for "
        "requests that name it in X-TFY-GUARDRAILS"
    )


def test_the_server_prints_warnings_at_start_and_logs_them_on_reload(
    start_gateway: GatewayFactory, mock_upstream: Server
) -> None:
    typo = """---
type: gateway-rate-limiting-config
rules:
  - {id: typo, when: {models: [oa/gpt-4o-minii]}, limit_to: 5, unit: requests_per_minute}
"""
    gw = start_gateway(ACCOUNT.format(mock=mock_upstream.url) + typo)
    assert "warning: " in output_of(gw.proc) and "'oa/gpt-4o-minii'" in output_of(gw.proc)
    path = Path(gw.proc.args[3])  # type: ignore[index]
    path.write_text(ACCOUNT.format(mock=mock_upstream.url) + typo.replace("minii", "miniz"))
    deadline = time.monotonic() + 10
    while "'oa/gpt-4o-miniz'" not in output_of(gw.proc) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "config warning: " in output_of(gw.proc)
    assert "'oa/gpt-4o-miniz'" in gw.output()
