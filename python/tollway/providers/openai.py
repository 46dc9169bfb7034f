"""OpenAI and OpenAI-compatible upstreams: the client's body with the target's model id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from tollway.providers import Endpoints, ProviderTarget
from tollway.providers.urls import openai_api_base

__all__ = ["OpenAIProvider", "ask_for_usage"]

_encode = msgspec.json.Encoder().encode


def ask_for_usage(openai_body: dict[str, Any]) -> bool:
    """Makes a streamed request ask for the usage chunk; returns whether the client had asked
    (if not, the meter strips that chunk: `SseMeter(..., strip_usage=not asked)`)."""
    options = openai_body.get("stream_options")
    asked = isinstance(options, dict) and options.get("include_usage") is True
    if not asked:
        openai_body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    return asked


@dataclass(frozen=True, slots=True)
class OpenAIProvider:
    name: str = "openai"
    stream_format: Literal["openai"] = "openai"

    def endpoints(self, target: ProviderTarget) -> Endpoints:
        base = openai_api_base(target.base_url)
        headers = {"content-type": "application/json", **dict(target.headers)}
        if target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        return Endpoints(f"{base}/chat/completions", f"{base}/embeddings", headers)

    def request_body(self, openai_body: dict[str, Any], model_id: str) -> bytes:
        return _encode({**openai_body, "model": model_id})

    def response_body(self, status: int, body: bytes, model: str) -> bytes:
        return body
