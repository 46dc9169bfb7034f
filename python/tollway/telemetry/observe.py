"""What the request path hands to telemetry: one compact `Record` per request.

Built once, after the response and settle, from values the request already holds; spans,
metrics and the access log are made from it in the background (tollway.telemetry).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tollway.engine import Admission, Denial, PlanInfo, Runtime
from tollway.telemetry.record import Attempt, GuardrailRun, LogPart, Record

__all__ = ["AttemptLog", "RequestLog", "build_record"]

_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class AttemptLog:
    """One upstream attempt as telemetry reports it (times are offsets from the start)."""

    plan: PlanInfo
    start_s: float
    end_s: float = 0.0
    status: int = 0
    error_type: str = ""
    fallback_reason: str = ""
    # What settle() is told: an HTTP status or routing OUTCOME_* code; -1 while in flight.
    outcome: int = -1
    output_tokens: int = 0


@dataclass(slots=True)
class RequestLog:
    """What a request learned about itself, filled in as it goes."""

    route: str
    start_ns: int
    status: int = 200
    error_type: str = ""
    attempts: list[AttemptLog] = field(default_factory=list)
    # Of the answer that reached the client:
    response_id: str = ""
    response_model: str = ""
    finish_reasons: list[str] = field(default_factory=list)
    # (input, cached input, output, cache write) tokens.
    usage: tuple[int, int, int, int] = (0, 0, 0, 0)
    usage_estimated: bool = False
    cost_usd: float = 0.0
    ttft_ms: float | None = None
    itl_mean_ms: float | None = None
    itl_max_ms: float | None = None
    output_text: str | None = None
    guardrails: list[GuardrailRun] = field(default_factory=list)
    # For the request log: the body as received, and the x-tfy-logging-config header.
    request_body: bytes = b""
    logging_config: bytes | None = None

    def begin(self, plan: PlanInfo, start_s: float) -> None:
        """A new attempt; on another target than the last one, why that one failed is the
        new attempt's fallback reason."""
        reason = ""
        if self.attempts and self.attempts[-1].plan is not plan:
            prev = self.attempts[-1]
            reason = str(prev.status) if prev.status else prev.error_type
        self.attempts.append(AttemptLog(plan, start_s, fallback_reason=reason))


_NUMBER = (int, float)


def _param(req: dict[str, Any], name: str) -> Any:
    value = req.get(name)
    return value if type(value) in _NUMBER else None


def build_record(
    rt: Runtime,
    log: RequestLog,
    request_id: bytes,
    duration_s: float,
    req: dict[str, Any] | None,
    adm: Admission | Denial | None,
    traceparent: bytes | None,
    capture_content: bool,
    tracing: bool = False,
    log_body_cap: int | None = None,
) -> Record:
    """`log_body_cap`: None without a request log, else the cap on logged bodies (0: none)."""
    key_name = subject = routing = ""
    metadata: dict[str, str] = {}
    rule_ids: list[str] = []
    rate_limit: tuple[str, str] | None = None
    budget: tuple[str, str] | None = None
    candidates: list[str] = []
    if type(adm) is Admission:
        key = rt.keys[adm.key]
        key_name, subject = key.name, key.subject
        metadata = adm.metadata
        routing_id, limit_id, budget_id, _ = adm.rule_ids
        rule_ids = [r for r in (routing_id, limit_id, budget_id) if r]
        if limit_id:
            rate_limit = (limit_id, "allowed")
        if budget_id:
            budget = (budget_id, "over_limit_audit" if adm.budget_over_audit else "allowed")
        routing = routing_id or ""
        if tracing and routing:
            candidates = list(map(rt.plan_targets.__getitem__, adm.plans))
    elif adm is not None:
        if adm.key is not None:
            key = rt.keys[adm.key]
            key_name, subject = key.name, key.subject
        if adm.rule_id:
            if adm.code == "budget_exceeded":
                budget = (adm.rule_id, "blocked")
            else:
                rate_limit = (adm.rule_id, "blocked")
            rule_ids = [adm.rule_id]
    req = req or {}
    stream = req.get("stream") is True
    attempts = []
    start = log.start_ns
    if log.attempts:
        temperature = _param(req, "temperature")
        max_tokens = _param(req, "max_tokens") or _param(req, "max_completion_tokens")
        top_p = _param(req, "top_p")
        messages = _encode(req.get("messages")).decode() if capture_content else None
        for i, a in enumerate(log.attempts, 1):
            up = a.plan.upstream
            attempts.append(
                Attempt(
                    target=up.name,
                    provider=up.provider.name,  # the span's gen_ai.provider.name: the core maps it
                    request_model=up.model_id,
                    start_ns=start + int(a.start_s * 1e9),
                    end_ns=start + int(a.end_s * 1e9),
                    status=a.status,
                    error_type=a.error_type,
                    attempt=i,
                    fallback_reason=a.fallback_reason,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    top_p=top_p,
                    stream=stream,
                    input_messages=messages,
                )
            )
        if log.status < 400:  # the answer the client got came from the last attempt
            _answered(attempts[-1], log, capture_content)
    model = req.get("model")
    rec = Record(
        request_id=request_id.decode("ascii", "replace"),
        start_ns=start,
        end_ns=start + int(duration_s * 1e9),
    )
    rec.route, rec.status, rec.error_type = log.route, log.status, log.error_type
    rec.key_name, rec.subject, rec.metadata = key_name, subject, metadata
    rec.model = model if type(model) is str else ""
    rec.rule_ids, rec.routing_rule, rec.candidates = rule_ids, routing, candidates
    rec.rate_limit, rec.budget = rate_limit, budget
    if traceparent:
        rec.traceparent = traceparent.decode("ascii", "replace")
    rec.attempts, rec.guardrails = attempts, log.guardrails
    if log_body_cap is not None:
        rec.log = _log_part(log, metadata, stream, log_body_cap)
    return rec


def _answered(final: Attempt, log: RequestLog, capture_content: bool) -> None:
    final.response_model, final.response_id = log.response_model, log.response_id
    final.input_tokens, final.output_tokens = log.usage[0], log.usage[2]
    final.finish_reasons, final.ttft_ms = log.finish_reasons, log.ttft_ms
    final.itl_mean_ms, final.itl_max_ms = log.itl_mean_ms, log.itl_max_ms
    final.cost_usd, final.usage_estimated = log.cost_usd, log.usage_estimated
    if capture_content:
        final.output_text = log.output_text


def _log_part(log: RequestLog, metadata: dict[str, str], stream: bool, cap: int) -> LogPart:
    enabled = metadata.get("tfy_log_request") != "false"
    header = log.logging_config
    if enabled and header is not None and b"false" in header:
        with contextlib.suppress(msgspec.DecodeError, AttributeError):
            enabled = msgspec.json.decode(header).get("enabled") is not False
    request_body = response_body = None
    if cap > 0 and enabled:
        request_body = log.request_body[:cap].decode("utf-8", "replace")
        response_body = log.output_text[:cap] if log.output_text is not None else None
    return LogPart(
        enabled=enabled,
        input_tokens=log.usage[0],
        cached_tokens=log.usage[1],
        output_tokens=log.usage[2],
        cost_usd=log.cost_usd,
        stream=stream,
        request_body=request_body,
        response_body=response_body,
    )
