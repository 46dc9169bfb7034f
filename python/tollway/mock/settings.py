"""Settings of the mock upstream and their hand-over to Granian workers through the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

import msgspec

__all__ = ["DEFAULT_MODELS", "SETTINGS_ENV", "MockSettings", "settings_from_env", "settings_to_env"]

SETTINGS_ENV = "TOLLWAY_MOCK_SETTINGS"

DEFAULT_MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "text-embedding-3-small",
    "claude-haiku-4-5",
    "claude-opus-4-5",
)


@dataclass(frozen=True)
class MockSettings:
    """How the mock answers; one instance per app, shared by every request."""

    host: str = "127.0.0.1"
    port: int = 9001
    workers: int = 1
    latency_ms: float = 0.0  # before the first byte of every API answer
    tokens: int = 16  # per answer, unless the request's max_tokens is lower
    itl_ms: float = 0.0  # between the content tokens of a stream
    # When fail_status is set, API calls (chat, messages, embeddings) fail with it, spread
    # evenly at fail_rate (0.5: every second call), only among the first fail_first of each
    # worker when that is set.
    fail_status: int | None = None
    fail_rate: float = 1.0
    fail_first: int | None = None
    embedding_dimensions: int = 8
    models: tuple[str, ...] = DEFAULT_MODELS

    def __post_init__(self) -> None:
        if self.tokens < 0:
            raise ValueError("tokens must be >= 0")
        if self.latency_ms < 0 or self.itl_ms < 0:
            raise ValueError("latency_ms and itl_ms must be >= 0")
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError("fail_rate must be within 0..1")
        if self.fail_status is not None and not 100 <= self.fail_status <= 599:
            raise ValueError("fail_status must be an HTTP status code")
        if self.fail_first is not None and self.fail_first < 0:
            raise ValueError("fail_first must be >= 0")
        if not 1 <= self.embedding_dimensions <= 65536:
            raise ValueError("embedding_dimensions must be within 1..65536")


def settings_to_env(settings: MockSettings) -> str:
    """The value of `TOLLWAY_MOCK_SETTINGS` that makes workers rebuild `settings`."""
    return msgspec.json.encode(settings).decode()


def settings_from_env(environ: dict[str, str] | None = None) -> MockSettings:
    """Reads `TOLLWAY_MOCK_SETTINGS`; defaults when it is absent."""
    raw = (os.environ if environ is None else environ).get(SETTINGS_ENV)
    if not raw:
        return MockSettings()
    return msgspec.json.decode(raw, type=MockSettings)
