"""Answers with the mid-answer faults applied (`reset-mid`, `truncated`), for the providers
whose answers are built whole (Gemini, Vertex, Bedrock)."""

from __future__ import annotations

from collections.abc import Sequence

from tollway.mock.exchange import JSON_HEADERS, SSE_HEADERS, Call, MockAbort
from tollway.mock.state import Fault, MockState

__all__ = ["respond_whole", "stream_events"]


async def respond_whole(
    call: Call, fault: Fault, out: bytes, headers: Sequence[tuple[bytes, bytes]] = JSON_HEADERS
) -> None:
    """A whole answer; `reset-mid` cuts the connection halfway, `truncated` the body."""
    if fault.kind == "reset-mid":
        await call.respond_partial(out[: len(out) // 2], len(out))
    elif fault.kind == "truncated":
        await call.respond(200, out[: len(out) // 2])
    else:
        await call.respond(200, out, headers)


async def stream_events(
    state: MockState,
    call: Call,
    fault: Fault,
    events: list[bytes],
    broken_tail: bytes,
    headers: Sequence[tuple[bytes, bytes]] = SSE_HEADERS,
) -> None:
    """Streams `events` (the first unpaced, then `itl` apart); `reset-mid` cuts the connection
    halfway, `truncated` ends halfway with `broken_tail` (a cut event)."""
    if fault.kind in ("reset-mid", "truncated"):
        events = events[: max(len(events) // 2, 1)]
        if fault.kind == "truncated":
            events.append(broken_tail)
    if not await call.stream(events, range(1, len(events)), state.itl_s, headers):
        return
    if fault.kind == "reset-mid":
        raise MockAbort("mock: stream cut before its end")
    await call.end()
