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


def _param(req: dict[str, Any], name: str) -> Any:
    value = req.get(name)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


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
    key_name = subject = ""
    metadata: dict[str, str] = {}
    rule_ids: list[str] = []
    routing = ""
    rate_limit = budget = None
    if isinstance(adm, Admission):
        key = rt.keys[adm.key]
        key_name, subject = key.name, key.subject
        metadata = adm.metadata
        routing_id, limit_id, budget_id, _guardrails_id = adm.rule_ids
        rule_ids = [r for r in (routing_id, limit_id, budget_id) if r]
        routing = routing_id or ""
        rate_limit = (limit_id, "allowed") if limit_id else None
        if budget_id:
            budget = (budget_id, "over_limit_audit" if adm.budget_over_audit else "allowed")
    elif isinstance(adm, Denial) and adm.key is not None:
        key = rt.keys[adm.key]
        key_name, subject = key.name, key.subject
    if isinstance(adm, Denial) and adm.rule_id:
        kind = "blocked"
        if adm.code == "budget_exceeded":
            budget = (adm.rule_id, kind)
        else:
            rate_limit = (adm.rule_id, kind)
        rule_ids = [adm.rule_id]
    req = req or {}
    model = req.get("model")
    attempts = []
    last = len(log.attempts) - 1
    for i, a in enumerate(log.attempts):
        up = a.plan.upstream
        final = i == last and log.status < 400
        attempts.append(
            Attempt(
                target=up.name,
                provider=up.provider.name,  # the span's gen_ai.provider.name: the core maps it
                request_model=up.model_id,
                start_ns=log.start_ns + int(a.start_s * 1e9),
                end_ns=log.start_ns + int(a.end_s * 1e9),
                status=a.status,
                error_type=a.error_type,
                response_model=log.response_model if final else "",
                response_id=log.response_id if final else "",
                input_tokens=log.usage[0] if final else None,
                output_tokens=log.usage[2] if final else None,
                finish_reasons=log.finish_reasons if final else [],
                ttft_ms=log.ttft_ms if final else None,
                itl_mean_ms=log.itl_mean_ms if final else None,
                itl_max_ms=log.itl_max_ms if final else None,
                cost_usd=log.cost_usd if final else None,
                attempt=i + 1,
                fallback_reason=a.fallback_reason,
                temperature=_param(req, "temperature"),
                max_tokens=_param(req, "max_tokens") or _param(req, "max_completion_tokens"),
                top_p=_param(req, "top_p"),
                stream=req.get("stream") is True,
                input_messages=_encode(req.get("messages")).decode() if capture_content else None,
                output_text=log.output_text if capture_content and final else None,
                usage_estimated=final and log.usage_estimated,
            )
        )
    part = None
    if log_body_cap is not None:
        part = _log_part(log, metadata, req.get("stream") is True, log_body_cap)
    return Record(
        request_id=request_id.decode("ascii", "replace"),
        start_ns=log.start_ns,
        end_ns=log.start_ns + int(duration_s * 1e9),
        route=log.route,
        status=log.status,
        key_name=key_name,
        subject=subject,
        model=model if isinstance(model, str) else "",
        rule_ids=rule_ids,
        metadata=metadata,
        traceparent=traceparent.decode("ascii", "replace") if traceparent else "",
        attempts=attempts,
        error_type=log.error_type,
        rate_limit=rate_limit,
        budget=budget,
        routing_rule=routing,
        guardrails=log.guardrails,
        # Only for the load-balancing span: a list of a few names, and only when tracing.
        candidates=list(map(rt.plan_targets.__getitem__, adm.plans))
        if tracing and routing and isinstance(adm, Admission)
        else [],
        log=part,
    )


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
