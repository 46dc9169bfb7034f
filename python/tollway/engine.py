"""The typed facade over the Rust engine: what the request path needs, precomputed per config.

Python code imports this module, not `tollway._core` (this is the one importer of the
extension). A `Runtime` is built once per config (URLs joined, headers with the provider key
assembled, timeouts resolved), so a request only indexes lists by the ids `admit` returns.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tollway import _core
from tollway._core import (
    Admission,
    Check,
    Denial,
    Engine,
    Finding,
    GuardrailInfo,
    Guardrails,
    Key,
    MetricsEncoder,
    Outcome,
    RecordBatch,
    RecordBuffer,
    RecordFold,
    RequestScrubber,
    Scrubber,
    Settings,
    SpanEncoder,
    SseMeter,
    StreamRedactor,
    ToolAdmission,
    admit_tool,
    apply_lease,
    apply_remote,
    budget_spend,
    count_prompt_tokens,
    count_tokens,
    drain_deltas,
    guardrail_verdict,
    mcp_config_json,
    monotonic_ms,
    read_head,
    reseed_request_ids,
    server_timing,
    set_replicas,
    set_share,
    sync_tick,
    telemetry_defaults,
    tool_allowed,
    warm_tokenizer,
)
from tollway.config import ConfigError, load_documents
from tollway.providers import Provider, RequestAuth
from tollway.providers.registry import provider_for
from tollway.upstream import WIRE_HEADERS

# A forked worker makes its own request ids (the core's generator, like `random`'s, is
# reseeded in the child).
os.register_at_fork(after_in_child=reseed_request_ids)

__all__ = [
    "Admission",
    "Check",
    "ConfigError",
    "Denial",
    "Engine",
    "Finding",
    "GuardrailInfo",
    "Guardrails",
    "Key",
    "MetricsEncoder",
    "Outcome",
    "PlanInfo",
    "RecordBatch",
    "RecordBuffer",
    "RecordFold",
    "RequestScrubber",
    "Runtime",
    "Scrubber",
    "Settings",
    "SpanEncoder",
    "SseMeter",
    "StreamRedactor",
    "ToolAdmission",
    "Upstream",
    "admit_tool",
    "apply_lease",
    "apply_remote",
    "budget_spend",
    "compile_documents",
    "compile_engine",
    "count_prompt_tokens",
    "count_tokens",
    "drain_deltas",
    "guardrail_verdict",
    "load_runtime",
    "mcp_config_json",
    "monotonic_ms",
    "read_head",
    "server_timing",
    "set_replicas",
    "set_share",
    "sync_tick",
    "telemetry_defaults",
    "tool_allowed",
    "warm_tokenizer",
]


@dataclass(frozen=True, slots=True)
class Upstream:
    """One `<account>/<model>` target as the upstream client calls it."""

    name: str
    account: str
    provider: Provider
    model_id: str
    chat_url: str
    embeddings_url: str | None
    # Provider credentials and account headers; never logged, never sent to a client.
    headers: dict[str, str]
    resolved_header: bytes
    # Providers with a separate streaming method (Gemini, Bedrock), and per-request auth
    # (SigV4 signatures, short-lived OAuth tokens).
    stream_url: str | None = None
    auth: RequestAuth | None = None

    def url(self, endpoint: str, stream: bool) -> str | None:
        """Where a request of `endpoint` goes (None: the target has no such API)."""
        if stream and self.stream_url is not None:
            return self.stream_url  # providers with a separate streaming method
        return self.chat_url if endpoint == "chat" else self.embeddings_url


@dataclass(frozen=True, slots=True)
class PlanInfo:
    """How to call one target for one routing rule slot (or directly): retries, fallback."""

    target: int
    upstream: Upstream
    retries: int
    retry_delay_s: float
    retry_on: frozenset[int]
    fallback_on: frozenset[int]
    fallback_candidate: bool
    override_params: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Runtime:
    """A compiled config plus the Python-side tables derived from it."""

    engine: Engine
    settings: Settings
    upstreams: tuple[Upstream, ...]
    keys: tuple[Key, ...]
    plans: tuple[PlanInfo, ...]
    # None when no guardrails are configured: the request path then skips them entirely.
    guardrails: Guardrails | None = None
    guard_infos: tuple[GuardrailInfo, ...] = ()
    # Every provider secret of this config, removed from whatever is relayed to a client.
    scrubber: Scrubber = field(default_factory=lambda: Scrubber([]))
    # Per plan id, its target's name (telemetry's routing candidates).
    plan_targets: tuple[str, ...] = ()

    @classmethod
    def build(cls, engine: Engine) -> Runtime:
        upstreams = []
        # One provider per kind: providers keep per-account state (Vertex token caches).
        providers: dict[str, Provider] = {}
        for t in engine.targets:
            provider = providers.get(t.provider)
            if provider is None:
                provider = providers[t.provider] = provider_for(t.provider)
            ep = provider.endpoints(t)
            upstreams.append(
                Upstream(
                    name=t.name,
                    account=t.account,
                    provider=provider,
                    model_id=t.model_id,
                    chat_url=ep.chat_url,
                    embeddings_url=ep.embeddings_url,
                    headers={**WIRE_HEADERS, **ep.headers},
                    resolved_header=t.name.encode(),
                    stream_url=ep.stream_url,
                    auth=ep.auth,
                )
            )
        plans = tuple(
            PlanInfo(
                target=p.target,
                upstream=upstreams[p.target],
                retries=p.retry_attempts,
                retry_delay_s=p.retry_delay_ms / 1000,
                retry_on=frozenset(p.retry_status_codes),
                fallback_on=frozenset(p.fallback_status_codes),
                fallback_candidate=p.fallback_candidate,
                override_params=msgspec.json.decode(p.override_params)
                if p.override_params
                else None,
            )
            for p in engine.plans
        )
        guardrails: Guardrails | None = engine.guardrails
        infos: tuple[GuardrailInfo, ...] = ()
        if guardrails is not None and guardrails.names:
            infos = tuple(guardrails.info(i) for i in range(len(guardrails.names)))
        else:
            guardrails = None
        return cls(
            engine,
            engine.settings,
            tuple(upstreams),
            tuple(engine.keys),
            plans,
            guardrails,
            infos,
            Scrubber(_provider_secrets(engine)),
            tuple(p.upstream.name for p in plans),
        )


# Account headers whose values are credentials (names are compared in lower case). Others
# (`x-env: production`) are not scrubbed: that would mangle answers quoting such words.
_CREDENTIAL_HEADER_WORDS = ("key", "token", "auth", "secret", "password", "cookie", "signature")


def _provider_secrets(engine: Engine) -> list[str]:
    """API keys, cloud credentials (AWS keys, a service account's private key) and the values
    of credential-bearing account headers."""
    secrets = set()
    for t in engine.targets:
        for value in (t.api_key, t.aws_access_key_id, t.aws_secret_access_key, t.aws_session_token):
            if value:
                secrets.add(value)
        if t.service_account_json:
            with contextlib.suppress(msgspec.DecodeError, AttributeError):
                account = msgspec.json.decode(t.service_account_json)
                secrets.update(
                    v for k in ("private_key", "private_key_id") if (v := account.get(k))
                )
        for name, value in t.headers:
            if any(w in name.lower() for w in _CREDENTIAL_HEADER_WORDS):
                secrets.add(value.removeprefix("Bearer ").removeprefix("bearer "))
    return sorted(s for s in secrets if isinstance(s, str))


def compile_documents(documents: bytes, previous: Engine | None = None) -> Engine:
    """Compiles what `config.load_documents` returned; raises `ConfigError` listing every
    error. With `previous`, live state (health, latency, counters) of unchanged ids carries
    over."""
    try:
        return Engine(documents, previous=previous)
    except _core.ConfigError as e:
        raise ConfigError(list(e.args[0])) from None


def compile_engine(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    previous: Engine | None = None,
) -> Engine:
    """Loads, validates and compiles a config file or directory (see `compile_documents`)."""
    return compile_documents(load_documents(path, env), previous)


def load_runtime(path: str, previous: Runtime | None = None) -> Runtime:
    """Compiles a config file or directory into a Runtime (raises `ConfigError`)."""
    documents = load_documents(path)
    engine = compile_documents(documents, previous.engine if previous else None)
    return Runtime.build(engine)
