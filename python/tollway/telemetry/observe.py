"""What a request learns about itself as it goes (`RequestLog`), for telemetry.

After the response and settle, `Telemetry.record_request` hands the log to the core, which
reads these fields by name (rust/tollway-py/src/record.rs) and composes the request's `Record`;
spans, metrics, the access log and the request log are made from it in the background.
"""

from __future__ import annotations

import msgspec

from tollway.engine import PlanInfo
from tollway.telemetry.record import GuardrailRun

__all__ = ["AttemptLog", "RequestLog"]


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
