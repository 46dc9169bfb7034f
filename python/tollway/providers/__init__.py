"""Providers: how the gateway speaks each upstream API while clients speak OpenAI's.

A `Provider` is stateless. Per target it computes the URLs and headers once (`endpoints`, at
config build), then per request it turns the client's OpenAI body into the provider's
(`request_body`) and the provider's non-streamed answer back (`response_body`). Streams are
translated by the Rust `SseMeter` in the `stream_format` the provider names.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec

if TYPE_CHECKING:
    from tollway.upstream import UpstreamClient, UpstreamResponse

__all__ = [
    "OPENAI_COMPATIBLE",
    "CloudTarget",
    "Endpoints",
    "Provider",
    "ProviderTarget",
    "RequestAuth",
    "TranslationError",
    "content_parts",
    "float32_base64",
    "tool_arguments",
]

StreamFormat = Literal["openai", "anthropic", "gemini", "bedrock"]

# Providers that speak the OpenAI API; the presets differ in base URL and quirks (openai.py).
OPENAI_COMPATIBLE = frozenset(
    (
        "openai",
        "openai-compatible",
        "mistral",
        "groq",
        "together",
        "fireworks",
        "deepseek",
        "openrouter",
        "vllm",
        "ollama",
        "lm-studio",
    )
)


class TranslationError(ValueError):
    """The client's request cannot be expressed in the provider's API (answer 400)."""


class ProviderTarget(Protocol):
    """What a provider needs to know about an `<account>/<model>` target."""

    @property
    def base_url(self) -> str: ...
    @property
    def api_key(self) -> str | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, str]]: ...
    @property
    def model_id(self) -> str: ...
    @property
    def api_version(self) -> str | None: ...


class CloudTarget(ProviderTarget, Protocol):
    """The cloud fields of a target (Vertex, Bedrock); None where the account has none."""

    @property
    def account(self) -> str: ...

    @property
    def region(self) -> str | None: ...
    @property
    def project(self) -> str | None: ...
    @property
    def service_account_json(self) -> str | None: ...
    @property
    def service_account_file(self) -> str | None: ...
    @property
    def aws_access_key_id(self) -> str | None: ...
    @property
    def aws_secret_access_key(self) -> str | None: ...
    @property
    def aws_session_token(self) -> str | None: ...
    @property
    def aws_profile(self) -> str | None: ...

    def sigv4_headers(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        region: str,
        service: str,
        access_key_id: str,
        secret_access_key: str,
        session_token: str | None = None,
        unix_time: float | None = None,
    ) -> list[tuple[str, str]]:
        """SigV4 headers for a request (signed in Rust with AWS's `aws-sigv4` crate)."""
        ...


class RequestAuth(Protocol):
    """Credentials computed per request: a signature over the body, or a short-lived token."""

    async def headers(self, url: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        """`headers` plus the auth headers for sending `body` to `url`."""
        ...

    async def post(
        self,
        client: UpstreamClient,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        timeout_s: float,
    ) -> UpstreamResponse:
        """Sends `body` to `url` with these credentials: one call, or one per part of a
        batch the API takes a part at a time (`tollway.providers.fanout`)."""
        ...


@dataclass(frozen=True, slots=True)
class Endpoints:
    """A target's URLs and request headers, credentials included: never log them."""

    chat_url: str
    embeddings_url: str | None  # None: the provider has no embeddings API
    headers: dict[str, str]
    # Streams go here when the provider has a separate streaming method (Gemini, Bedrock).
    stream_url: str | None = None
    auth: RequestAuth | None = None


class Provider(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def stream_format(self) -> StreamFormat: ...

    def endpoints(self, target: CloudTarget) -> Endpoints: ...

    def request_body(self, openai_body: dict[str, Any], model_id: str) -> bytes:
        """The upstream request body for an OpenAI chat (or embeddings: a body with `input`
        and no `messages`) request, already validated."""
        ...

    def response_body(
        self, status: int, body: bytes, model: str, request: dict[str, Any] | None = None
    ) -> bytes:
        """The OpenAI body for the provider's non-streamed answer to `request`: a
        `chat.completion` (or embeddings list) for 2xx, an OpenAI error body otherwise."""
        ...


def content_parts(
    content: Any, image: Callable[[str], dict[str, Any]], provider: str
) -> list[dict[str, Any]]:
    """An OpenAI message's `content` (a string, or text and image_url parts) as a provider's
    `{"text": ...}` parts, with `image` making the provider's part for an image URL."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            img = part.get("image_url")
            url = img.get("url") if isinstance(img, dict) else img
            if not isinstance(url, str):
                raise TranslationError("image_url parts need a url")
            parts.append(image(url))
        else:
            raise TranslationError(
                f"content parts of type {kind!r} are not supported by {provider}"
            )
    return parts


def float32_base64(values: list[float]) -> str:
    """An embedding as OpenAI's `encoding_format: base64` sends it: little-endian float32."""
    floats = array("f", values)
    if sys.byteorder != "little":
        floats.byteswap()
    return base64.b64encode(floats.tobytes()).decode()


def tool_arguments(call: Any) -> dict[str, Any]:
    """An OpenAI tool call's `function.arguments` (a JSON string) as an object."""
    function = call.get("function") or {}
    try:
        args = msgspec.json.decode(function.get("arguments") or "{}")
    except msgspec.DecodeError:
        raise TranslationError("tool_calls[].function.arguments must be a JSON object") from None
    if not isinstance(args, dict):
        raise TranslationError("tool_calls[].function.arguments must be a JSON object")
    return args
