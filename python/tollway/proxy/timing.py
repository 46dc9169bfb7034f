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
        gateway = max(total - model - ttfb - gs, 0.0)
        return _HEAD % (gateway * 1000, gs * 1000, ttfb * 1000)
    return _DONE % (max(total - model - gs, 0.0) * 1000, gs * 1000, model * 1000, total * 1000)


_HEAD = b"gateway;dur=%.3f, guardrail;dur=%.3f, ttfb;dur=%.3f"
_DONE = b"gateway;dur=%.3f, guardrail;dur=%.3f, model;dur=%.3f, total;dur=%.3f"
