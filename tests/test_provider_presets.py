"""Provider kinds in config: presets name a provider instead of a URL, `base_url` still
overrides, and cloud fields are checked per provider with their paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from tollway.config import ConfigError
from tollway.engine import compile_engine
from tollway.providers.registry import provider_for

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


def test_providers_name_their_urls() -> None:
    class Target(msgspec.Struct, frozen=True):
        base_url: str = ""
        model_id: str = "m:1"
        api_key: str | None = "k"
        headers: list[tuple[str, str]] = []
        api_version: str | None = None
        account: str = "acc"
        region: str | None = "eu-west-1"
        project: str | None = "proj"
        service_account_json: str | None = None
        service_account_file: str | None = None
        aws_access_key_id: str | None = "AKID"
        aws_secret_access_key: str | None = "S"
        aws_session_token: str | None = None
        aws_profile: str | None = None

        def sigv4_headers(self, *args: Any) -> list[tuple[str, str]]:
            return []

    gem = provider_for("gemini").endpoints(Target())  # type: ignore[arg-type]
    assert (
        gem.chat_url
        == "https://generativelanguage.googleapis.com/v1beta/models/m%3A1:generateContent"
    )
    assert gem.stream_url is not None and gem.stream_url.endswith(":streamGenerateContent?alt=sse")
    root = provider_for("gemini").endpoints(Target("http://proxy:8080/"))  # type: ignore[arg-type]
    assert root.chat_url == "http://proxy:8080/v1beta/models/m%3A1:generateContent"
    vtx = provider_for("vertex").endpoints(Target())  # type: ignore[arg-type]
    assert vtx.chat_url.startswith(
        "https://eu-west-1-aiplatform.googleapis.com/v1/projects/proj/locations/eu-west-1/"
    )
    bed = provider_for("bedrock").endpoints(Target())  # type: ignore[arg-type]
    assert bed.chat_url == "https://bedrock-runtime.eu-west-1.amazonaws.com/model/m:1/converse"
    assert bed.embeddings_url == "https://bedrock-runtime.eu-west-1.amazonaws.com/model/m:1/invoke"
    assert bed.auth is not None
    assert provider_for("groq").stream_format == "openai"
