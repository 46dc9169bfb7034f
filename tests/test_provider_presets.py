"""Provider kinds in config: presets name a provider instead of a URL, `base_url` still
overrides, and cloud fields are checked per provider with their paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from tollway.config import ConfigError
from tollway.engine import compile_engine

PRESETS = {
    "mistral": "https://api.mistral.ai/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together": "https://api.together.xyz/v1",
    "fireworks": "https://api.fireworks.ai/inference/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "vllm": "http://localhost:8000/v1",
    "ollama": "http://localhost:11434/v1",
    "lm-studio": "http://localhost:1234/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}
LOCAL = {"vllm", "ollama", "lm-studio"}


def account(name: str, provider: str, extra: str = "") -> str:
    return f"type: provider-account\nname: {name}\nprovider: {provider}\nmodels: [m]\n{extra}"


def compile_yaml(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    try:
        compile_engine(path, env={})
    except ConfigError as e:
        return list(e.errors)
    return []


@pytest.mark.parametrize("provider", sorted(PRESETS))
def test_a_preset_fills_its_public_or_local_base_url(tmp_path: Path, provider: str) -> None:
    key = "" if provider in LOCAL else "api_key: k\n"
    path = tmp_path / "gateway.yaml"
    path.write_text(
        account("a", provider, key)
        + "---\n"
        + account("b", provider, key + "base_url: http://10.0.0.1:9/v1\n")
    )
    default, override = compile_engine(path, env={}).targets
    assert (default.provider, default.base_url) == (provider, PRESETS[provider])
    assert override.base_url == "http://10.0.0.1:9/v1"


def test_keys_are_required_except_for_local_servers_and_clouds(tmp_path: Path) -> None:
    errors = compile_yaml(tmp_path, account("g", "groq"))
    assert any("api_key: required for provider groq" in e for e in errors)
    ok = "---\n".join(
        [
            account("o", "ollama"),
            account("b", "bedrock", "region: us-east-1\n"),
            account("v", "vertex", "project: p\n"),
        ]
    )
    assert compile_yaml(tmp_path, ok) == []


def test_cloud_fields_belong_to_their_provider(tmp_path: Path) -> None:
    errors = compile_yaml(
        tmp_path,
        "---\n".join(
            [
                account("g", "gemini", "api_key: k\naws_access_key_id: AKID\n"),
                account("v", "vertex", "region: us-central1\n"),
                account("b", "bedrock", "aws_access_key_id: AKID\nproject: p\n"),
            ]
        ),
    )
    assert any("aws_access_key_id: not a field of provider gemini" in e for e in errors)
    assert any("project: required for provider vertex" in e for e in errors)
    assert any("project: not a field of provider bedrock" in e for e in errors)
    assert any("aws_access_key_id and aws_secret_access_key go together" in e for e in errors)
    assert not any("AKID" in e for e in errors)  # values never echoed
