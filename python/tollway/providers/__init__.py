"""Providers: how the gateway speaks each upstream API while clients speak OpenAI's.

A `Provider` is stateless. Per target it computes the URLs and headers once (`endpoints`, at
config build), then per request it turns the client's OpenAI body into the provider's
(`request_body`) and the provider's non-streamed answer back (`response_body`). Streams are
translated by the Rust `SseMeter` in the `stream_format` the provider names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = ["Endpoints", "Provider", "ProviderTarget", "TranslationError"]

StreamFormat = Literal["openai", "anthropic"]


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


@dataclass(frozen=True, slots=True)
class Endpoints:
    """A target's URLs and request headers, credentials included: never log them."""

    chat_url: str
    embeddings_url: str | None  # None: the provider has no embeddings API
    headers: dict[str, str]


class Provider(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def stream_format(self) -> StreamFormat: ...

    def endpoints(self, target: ProviderTarget) -> Endpoints: ...

    def request_body(self, openai_body: dict[str, Any], model_id: str) -> bytes:
        """The upstream request body for an OpenAI chat request (already validated)."""
        ...

    def response_body(self, status: int, body: bytes, model: str) -> bytes:
        """The OpenAI body for the provider's non-streamed answer: a `chat.completion` for 2xx,
        an OpenAI error body otherwise."""
        ...
