"""Config loading and `tollway check-config`: every error, with its path, and no secrets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tollway.config import ConfigError
from tollway.engine import compile_engine

ROOT = Path(__file__).resolve().parent.parent


def check(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["tollway", "check-config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def test_the_example_and_demo_configs_are_valid() -> None:
    r = check(ROOT / "examples" / "gateway.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK (13 targets, 3 keys)" in r.stdout
    assert "warning:" not in r.stdout, "the example shows config that is meant"
    demo = ROOT / "python" / "tollway" / "demo.yaml"
    env = {
        "TOLLWAY_DEMO_MOCK_URL": "http://127.0.0.1:1/v1",
        "TOLLWAY_DEMO_MCP_URL": "http://127.0.0.1:1/mcp",
    }
    engine = compile_engine(demo, env=env)
    assert [t.name for t in engine.targets][:1] == ["mock/gpt-4o-mini"]


BAD = """
type: gateway-settings
server: {port: 99999, max_body_bytes: "big", colour: blue}
---
type: provider-account
name: acct
provider: openai-compatible
api_key: sk-very-secret-provider-key
models: [{name: m1, model_idd: x}]
---
type: gateway-keys
keys:
  - name: a
    key: client-secret-key-1
    subject: user:a
  - name: b
    key_sha256: nothex
    subject: admin
    allowed_models: gpt-4o
---
type: gateway-lunch-config
"""


def test_check_config_prints_every_error_with_its_path_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    r = check(path)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    expected = [
        "(document 1, gateway-settings): server.port: 99999 is out of range",
        "(document 1, gateway-settings): server.max_body_bytes: expected a whole number",
        "(document 1, gateway-settings): server.colour: unknown field",
        "(document 2, provider-account): base_url: required for provider openai-compatible",
        "(document 2, provider-account): models[0].model_idd: unknown field",
        "(document 3, gateway-keys): keys[1].key_sha256: expected sha256:<64 hex digits>",
        "(document 3, gateway-keys): keys[1].subject: must be user:<id>",
        "(document 3, gateway-keys): keys[1].allowed_models: expected a list of strings",
        "(document 4, gateway-lunch-config): type: unknown document type",
    ]
    for want in expected:
        assert any(want in line for line in lines), f"missing {want!r} in:\n{r.stdout}"
    assert len(lines) == len(expected), r.stdout
    assert "sk-very-secret" not in r.stdout + r.stderr
    assert "client-secret" not in r.stdout + r.stderr


def test_env_interpolation_with_defaults_and_missing_variables(tmp_path: Path) -> None:
    path = tmp_path / "env.yaml"
    path.write_text(
        "type: gateway-settings\n"
        "server: {port: ${PORT}, host: '${HOST:-0.0.0.0}'}\n"
        "# a comment mentioning ${NOT_SET} is ignored\n"
    )
    engine = compile_engine(path, env={"PORT": "9123"})
    assert (engine.settings.port, engine.settings.host) == (9123, "0.0.0.0")
    with pytest.raises(ConfigError) as info:
        compile_engine(path, env={})
    assert info.value.errors == [f"{path}:2: environment variable PORT is not set"]


def test_a_directory_of_files_is_one_config(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "type: provider-account\nname: p\nprovider: openai-compatible\n"
        "base_url: http://127.0.0.1:1/v1\nmodels: [m]\n"
    )
    (tmp_path / "b.yml").write_text(
        "type: gateway-keys\nkeys: [{name: k, key: abcdefgh12, subject: 'team:x'}]\n"
    )
    (tmp_path / "notes.txt").write_text("not config")
    engine = compile_engine(tmp_path)
    assert [t.name for t in engine.targets] == ["p/m"]
    assert [k.name for k in engine.keys] == ["k"]


def test_yaml_syntax_errors_name_the_line_but_not_its_text(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("type: gateway-keys\nkeys: [{name: k, key: ${SECRET}\n")
    with pytest.raises(ConfigError) as info:
        compile_engine(path, env={"SECRET": "hunter2-secret"})
    (msg,) = info.value.errors
    assert msg.startswith(f"{path}:") and "invalid YAML" in msg
    assert "hunter2" not in msg


def test_duplicate_names_across_documents(tmp_path: Path) -> None:
    acct = "type: provider-account\nname: p\nprovider: openai\napi_key: k\nmodels: [m]\n"
    path = tmp_path / "dup.yaml"
    path.write_text(f"{acct}---\n{acct}")
    with pytest.raises(ConfigError) as info:
        compile_engine(path)
    assert any("duplicate provider-account 'p'" in e for e in info.value.errors)
