"""The Gemini API (`provider: gemini`, an API key): `generateContent`, its SSE stream, and
`batchEmbedContents`, translated by `tollway.providers.google`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import quote

import msgspec

from tollway.providers import CloudTarget, Endpoints
from tollway.providers import google as g
from tollway.providers.urls import gemini_api_base

__all__ = ["DEFAULT_BASE_URL", "GeminiProvider", "is_embeddings"]

DEFAULT_BASE_URL: Final = "https://generativelanguage.googleapis.com/v1beta"

_encode = msgspec.json.Encoder().encode


def is_embeddings(openai_body: dict[str, Any]) -> bool:
    """An embeddings request (`input`, no `messages`): the same provider serves both."""
    return "messages" not in openai_body and "input" in openai_body


@dataclass(frozen=True, slots=True)
class GeminiProvider:
    name: str = "gemini"
    stream_format: Literal["gemini"] = "gemini"

    def endpoints(self, target: CloudTarget) -> Endpoints:
        base = gemini_api_base(target.base_url or DEFAULT_BASE_URL)
        # `models/gemini-2.5-flash` (the API's resource name) and `gemini-2.5-flash` both work.
        model_id = target.model_id.removeprefix("models/")
        model = f"{base}/models/{quote(model_id, safe='')}"
        headers = {"content-type": "application/json", **dict(target.headers)}
        if target.api_key:
            headers["x-goog-api-key"] = target.api_key
        return Endpoints(
            f"{model}:generateContent",
            f"{model}:batchEmbedContents",
            headers,
            stream_url=f"{model}:streamGenerateContent?alt=sse",
        )

    def request_body(self, openai_body: dict[str, Any], model_id: str) -> bytes:
        if is_embeddings(openai_body):
            return _encode(g.to_embeddings_request(openai_body, model_id.removeprefix("models/")))
        return _encode(g.to_request(openai_body))

    def response_body(
        self, status: int, body: bytes, model: str, request: dict[str, Any] | None = None
    ) -> bytes:
        if not 200 <= status < 300:
            return g.from_error(status, body)
        if request is not None and is_embeddings(request):
            return g.from_embeddings(body, model, request)
        return g.from_response(body, model)
