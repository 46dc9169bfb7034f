"""A streamed answer: wait for the first chunk (until then the call may still fall back),
then relay it through the Rust SSE meter (usage, TTFT/ITL, Anthropic translation) and the
output guardrails; a provider failure after the first byte becomes an in-band error event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

from tollway.asgi import Send
from tollway.engine import PlanInfo, SseMeter, monotonic_ms
from tollway.errors import GatewayError
from tollway.guardrails.request import GuardPlan
from tollway.guardrails.stream import StreamGuard
from tollway.proxy.responses import CANCELLED, OUTCOME, elapsed_ms
from tollway.telemetry import now_ns
from tollway.telemetry.observe import RequestLog
from tollway.upstream import UpstreamError, UpstreamResponse

__all__ = ["StreamHost", "relay", "start_stream"]


class StreamHost(Protocol):
    """What a stream needs from the request that opened it (a `Call` is one): where to send,
    the first-token bound, the output guardrails, and where the attempt's end is recorded."""

    send: Send
    ttft_s: float | None
    wants_usage: bool
    guard: GuardPlan | None
    meter: SseMeter | None
    log: RequestLog

    def end(self, plan: PlanInfo, outcome: int, tokens: int) -> None: ...

    async def gate(self) -> None: ...

    def headers(
        self, plan: PlanInfo, extra: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]: ...


_SSE_HEADERS = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"))


async def start_stream(
    call: StreamHost, resp: UpstreamResponse, plan: PlanInfo, t0: float
) -> GatewayError | None:
    """Waits for the first chunk (bounded by the TTFT timeout) and then relays the stream;
    returns the failure when the stream never started, so the caller can fall back."""
    up = plan.upstream
    chunks = resp.chunks()
    try:
        pending = anext(chunks)
        # A task per stream only when a TTFT bound was asked for.
        first = await (asyncio.wait_for(pending, call.ttft_s) if call.ttft_s else pending)
    except (TimeoutError, StopAsyncIteration, UpstreamError) as e:
        resp.close()
        kind = e.kind if isinstance(e, UpstreamError) else "timeout"
        if isinstance(e, StopAsyncIteration):
            kind = "broken"
        call.end(plan, OUTCOME[kind], 0)
        return GatewayError.upstream_failure(kind, up.name, " before the first token")
    try:
        await call.gate()
    except GatewayError:
        resp.close()
        call.end(plan, CANCELLED, 0)
        raise
    meter = SseMeter(
        up.provider.stream_format,
        up.model_id,
        monotonic_ms() - elapsed_ms(t0),
        strip_usage=not call.wants_usage,
        include_usage=call.wants_usage,
    )
    call.meter = meter
    try:
        await relay(call, resp, chunks, first, meter, plan)
    finally:
        resp.close()
    return None


async def relay(
    call: StreamHost,
    resp: UpstreamResponse,
    chunks: AsyncIterator[bytes],
    first: bytes,
    meter: SseMeter,
    plan: PlanInfo,
) -> None:
    send = call.send
    headers = call.headers(plan, list(_SSE_HEADERS))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    guard = StreamGuard(call.guard) if call.guard is not None and call.guard.output else None
    guard_start = now_ns()
    status: int = 200
    broken: GatewayError | None = None
    # The per-chunk loop is the hottest Python of a stream: bound methods, no helper calls.
    feed = meter.feed
    more = {"type": "http.response.body", "body": b"", "more_body": True}
    try:
        out = feed(first)
        for_client = guard.feed(out) if guard is not None else out
        if for_client:
            await send({**more, "body": for_client})
        if meter.error is None:
            async for chunk in chunks:
                out = feed(chunk)
                if guard is not None:
                    out = guard.feed(out)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                if meter.error is not None or (guard is not None and guard.error is not None):
                    break
            else:
                out = meter.finish()
                if guard is not None:
                    out = guard.feed(out)
                if out:
                    await send({**more, "body": out})
    except UpstreamError as e:
        status, broken = OUTCOME[e.kind], GatewayError.upstream_failure(e.kind, plan.upstream.name)
    if guard is not None and guard.error is not None:
        broken = guard.error  # an output guardrail blocked the rest of the answer
    elif broken is None and meter.error is not None:
        status = OUTCOME["broken"]
        broken = GatewayError.stream_broken(
            plan.upstream.name, meter.error or "", meter.error_code or ""
        )
    if broken is not None:
        call.log.error_type = broken.code or "stream_error"
        # The client already has a 200: say so in-band and end without [DONE]; after the
        # first byte there is no fallback (the client may have shown part of an answer).
        event = b"event: error\ndata: " + broken.body() + b"\n\n"
        await send({"type": "http.response.body", "body": event, "more_body": True})
    if guard is not None:
        guard.report(guard_start)
    call.end(plan, status, meter.output_tokens)
    await send({"type": "http.response.body", "body": b"", "more_body": False})
