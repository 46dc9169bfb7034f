"""The typed facade over the Rust engine: what the request path needs, precomputed per config.

Python code imports this module, not `tollway._core`. A `Runtime` is built once per config
(URLs joined, headers with the provider key assembled, timeouts resolved), so a request only
indexes lists by the ids `admit` returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from tollway._core import Admission, ConfigError, Denial, Engine, Key, Settings

__all__ = [
    "Admission",
    "ConfigError",
    "Denial",
    "Engine",
    "Runtime",
    "Upstream",
]


@dataclass(frozen=True, slots=True)
class Upstream:
    """One `<account>/<model>` target as the upstream client calls it."""

    name: str
    account: str
    provider: str
    model_id: str
    chat_url: str
    embeddings_url: str
    # Provider credentials and account headers; never logged, never sent to a client.
    headers: dict[str, str]
    resolved_header: bytes


@dataclass(frozen=True, slots=True)
class Runtime:
    """A compiled config plus the Python-side tables derived from it."""

    engine: Engine
    settings: Settings
    upstreams: tuple[Upstream, ...]
    keys: tuple[Key, ...]

    @classmethod
    def build(cls, engine: Engine) -> Runtime:
        upstreams = []
        for t in engine.targets:
            headers = {"content-type": "application/json", **dict(t.headers)}
            if t.api_key:
                headers["authorization"] = f"Bearer {t.api_key}"
            upstreams.append(
                Upstream(
                    name=t.name,
                    account=t.account,
                    provider=t.provider,
                    model_id=t.model_id,
                    chat_url=f"{t.base_url}/chat/completions",
                    embeddings_url=f"{t.base_url}/embeddings",
                    headers=headers,
                    resolved_header=t.name.encode(),
                )
            )
        return cls(engine, engine.settings, tuple(upstreams), tuple(engine.keys))
