"""What the request path hands to telemetry: one compact `Record` per request.

Built once, after the response and settle, from values the request already holds; spans,
metrics and the access log are made from it in the background (tollway.telemetry).
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec

from tollway.engine import Admission, Denial, PlanInfo, Runtime
from tollway.telemetry.record import Attempt, GuardrailRun, LogPart, Record

__all__ = ["AttemptLog", "RequestLog", "build_record"]

_encode = msgspec.json.Encoder().encode


# Structs, not dataclasses: one is made per request (and per attempt), and a Struct's
# `__init__` and defaults run in C.
class AttemptLog(msgspec.Struct):
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


class RequestLog(msgspec.Struct):
    """What a request learned about itself, filled in as it goes."""

    route: str
    start_ns: int
    status: int = 200
    error_type: str = ""
    attempts: list[AttemptLog] = []
    # Of the answer that reached the client:
    response_id: str = ""
    response_model: str = ""
    finish_reasons: list[str] = []
    # (input, cached input, output, cache write) tokens.
    usage: tuple[int, int, int, int] = (0, 0, 0, 0)
    usage_estimated: bool = False
    cost_usd: float = 0.0
    ttft_ms: float | None = None
    itl_mean_ms: float | None = None
    itl_max_ms: float | None = None
    output_text: str | None = None
    guardrails: list[GuardrailRun] = []
    # For the request log: the body as received, and the x-tfy-logging-config header.
    request_body: bytes = b""
    logging_config: bytes | None = None

    def begin(self, plan: PlanInfo, start_s: float) -> None:
        """A new attempt; on another target than the last one, why that one failed is the
        new attempt's fallback reason."""
        reason = ""
        attempts = self.attempts
        if attempts and attempts[-1].plan is not plan:
            prev = attempts[-1]
            reason = str(prev.status) if prev.status else prev.error_type
        attempts.append(AttemptLog(plan, start_s, fallback_reason=reason))


_NUMBER = (int, float)


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
        key_name, subject, metadata = key.name, key.subject, adm.metadata
        routing_id, limit_id, budget_id, _ = adm.rule_ids
        if routing_id:
            routing = routing_id
            rule_ids.append(routing_id)
            if tracing:
                candidates = list(map(rt.plan_targets.__getitem__, adm.plans))
        if limit_id:
            rule_ids.append(limit_id)
            rate_limit = (limit_id, "allowed")
        if budget_id:
            rule_ids.append(budget_id)
            budget = (budget_id, "over_limit_audit" if adm.budget_over_audit else "allowed")
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
    model = ""
    stream = False
    attempts: list[Attempt] = []
    start = log.start_ns
    if req is not None:
        if type(m := req.get("model")) is str:
            model = m
        stream = req.get("stream") is True
        if log.attempts:
            attempts = _attempts(log, req, start, stream, capture_content)
    return Record(
        request_id.decode("ascii", "replace"),
        start,
        start + int(duration_s * 1e9),
        "POST",
        log.route,
        log.status,
        key_name,
        subject,
        model,
        rule_ids,
        metadata,
        traceparent.decode("ascii", "replace") if traceparent else "",
        attempts,
        log.error_type,
        rate_limit,
        budget,
        routing,
        log.guardrails,
        candidates,
        [],  # tools: an MCP request's
        None if log_body_cap is None else _log_part(log, metadata, stream, log_body_cap),
    )


def _attempts(
    log: RequestLog, req: dict[str, Any], start: int, stream: bool, capture_content: bool
) -> list[Attempt]:
    get = req.get
    temperature, top_p = get("temperature"), get("top_p")
    if type(temperature) not in _NUMBER:
        temperature = None
    if type(top_p) not in _NUMBER:
        top_p = None
    max_tokens = get("max_tokens")
    if type(max_tokens) not in _NUMBER or not max_tokens:
        max_tokens = get("max_completion_tokens")
        if type(max_tokens) not in _NUMBER:
            max_tokens = None
    messages = _encode(get("messages")).decode() if capture_content else None
    attempts = []
    # The answer the client got came from the last attempt; the others answered nothing.
    answered = len(log.attempts) if log.status < 400 else 0
    usage = log.usage
    for i, a in enumerate(log.attempts, 1):
        up = a.plan.upstream
        final = i == answered
        attempts.append(
            Attempt(
                up.name,
                up.provider.name,  # the span's gen_ai.provider.name: the core maps it
                up.model_id,
                start + int(a.start_s * 1e9),
                start + int(a.end_s * 1e9),
                a.status,
                a.error_type,
                log.response_model if final else "",
                log.response_id if final else "",
                usage[0] if final else None,  # input tokens
                usage[2] if final else None,  # output tokens
                log.finish_reasons if final else [],
                log.ttft_ms if final else None,
                log.itl_mean_ms if final else None,
                log.itl_max_ms if final else None,
                log.cost_usd if final else None,
                i,
                a.fallback_reason,
                temperature,
                max_tokens,
                top_p,
                stream,
                messages,
                log.output_text if final and capture_content else None,
                log.usage_estimated if final else False,
            )
        )
    return attempts


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
    usage = log.usage
    return LogPart(
        enabled, usage[0], usage[1], usage[2], log.cost_usd, stream, request_body, response_body
    )
