"""The `Server-Timing` response header, from what the request's log already holds.

Phases as TrueFoundry's gateway names them: `gateway` (time in the gateway itself: auth,
admission, translation), `guardrail` (guardrail runs), `model` (upstream attempts, retries and
fallbacks included) or, on a stream's head, `ttfb` (the answering attempt's start to its first
chunk), and `total` where the response is complete. Durations are milliseconds.
"""

from __future__ import annotations

from time import perf_counter

from tollway.engine import server_timing as _header
from tollway.telemetry.observe import RequestLog

__all__ = ["server_timing"]


def server_timing(started: float, log: RequestLog, ttfb_from: float | None = None) -> bytes:
    """The header value now; `ttfb_from` (a perf_counter time) marks a stream's head."""
    now = perf_counter()
    model = 0.0
    for a in log.attempts:
        if a.end_s > a.start_s:
            model += a.end_s - a.start_s
    guard = 0
    for g in log.guardrails:
        guard += g.end_ns - g.start_ns
    total = now - started
    gs = guard / 1e9
    if ttfb_from is not None:
        ttfb = now - ttfb_from
        return _header(total - model - ttfb - gs, gs, ttfb)
    return _header(total - model - gs, gs, model, total)
