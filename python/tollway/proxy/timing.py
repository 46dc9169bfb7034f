"""The `Server-Timing` response header, from what the request's log already holds.

Phases as TrueFoundry's gateway names them: `gateway` (time in the gateway itself: auth,
admission, translation), `guardrail` (guardrail runs), `model` (upstream attempts, retries and
fallbacks included) or, on a stream's head, `ttfb` (the answering attempt's start to its first
chunk), and `total` where the response is complete. Durations are milliseconds.
"""

from __future__ import annotations

from time import perf_counter

from tollway.telemetry.observe import RequestLog

__all__ = ["server_timing"]


def server_timing(started: float, log: RequestLog, ttfb_from: float | None = None) -> bytes:
    """The header value now; `ttfb_from` (a perf_counter time) marks a stream's head."""
    now = perf_counter()
    total = (now - started) * 1000
    model = sum(max(a.end_s - a.start_s, 0.0) for a in log.attempts if a.end_s) * 1000
    guard = sum(g.end_ns - g.start_ns for g in log.guardrails) / 1e6
    if ttfb_from is not None:
        ttfb = (now - ttfb_from) * 1000
        gateway = max(total - model - ttfb - guard, 0.0)
        return (
            f"gateway;dur={gateway:.3f}, guardrail;dur={guard:.3f}, ttfb;dur={ttfb:.3f}"
        ).encode()
    gateway = max(total - model - guard, 0.0)
    return (
        f"gateway;dur={gateway:.3f}, guardrail;dur={guard:.3f}, model;dur={model:.3f}, "
        f"total;dur={total:.3f}"
    ).encode()
