"""A streamed answer: wait for the first chunk (until then the call may still fall back),
then relay it through the Rust SSE meter (usage, TTFT/ITL, Anthropic translation) and the
output guardrails; a provider failure after the first byte becomes an in-band error event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from tollway.asgi import Send
from tollway.engine import PlanInfo, RequestScrubber, SseMeter, monotonic_ms
from tollway.errors import GatewayError
from tollway.guardrails.request import GuardPlan
from tollway.guardrails.stream import StreamGuard
from tollway.proxy.responses import CANCELLED, OUTCOME, elapsed_ms
from tollway.proxy.timing import server_timing
from tollway.telemetry import now_ns
from tollway.telemetry.observe import RequestLog
from tollway.upstream import UpstreamError, UpstreamResponse

__all__ = ["StreamHost", "meter_into_log", "relay", "start_stream"]

if TYPE_CHECKING:
    from tollway.ingress import Ingress


class StreamHost(Protocol):
    """What a stream needs from the request that opened it (a `Call` is one): where to send,
    the first-token bound, the output guardrails, where the attempt's end is recorded, and the
    secret scrubbing and size cap every relayed byte goes through."""

    # Done with each message when it returns (a stream's relay refills one body message).
    send: Send
    ttft_s: float | None
    wants_usage: bool
    guard: GuardPlan | None
    meter: SseMeter | None
    log: RequestLog
    # Set once the relay has sent everything; with the meter past the answer's end, a client
    # leaving then cancels nothing (read when it leaves, not marked per chunk).
    delivered: bool
    # Another client API (`/v1/messages`, `/v1/responses`): it picks the stream format.
    ingress: Ingress | None
    started: float
    # The most a provider may send for this request (`max_response_bytes`).
    response_limit: int

    def end(self, plan: PlanInfo, outcome: int, tokens: int, kind: str = "") -> None: ...

    # Every provider secret and the request's own key out of what reaches the client.
    scrubber: RequestScrubber

    async def gate(self) -> None: ...

    def headers(
        self, plan: PlanInfo, extra: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]: ...


_SSE_HEADERS = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"))
# A streamed answer in a trace (exclude_request_data: false) keeps at most this much text.
_MAX_TRACED_TEXT = 32 * 1024


def meter_into_log(meter: SseMeter, log: RequestLog, capture_content: bool) -> None:
    """What the meter read of a stream, for the request's record."""
    log.ttft_ms, log.itl_mean_ms = meter.ttft_ms, meter.itl_mean_ms
    log.itl_max_ms, log.response_id = meter.itl_max_ms, meter.response_id or ""
    log.finish_reasons = [meter.finish_reason] if meter.finish_reason else []
    if capture_content:
        log.output_text = meter.text(_MAX_TRACED_TEXT)  # what the client was sent


async def start_stream(
    call: StreamHost, resp: UpstreamResponse, plan: PlanInfo, t0: float
) -> GatewayError | None:
    """Waits for the first chunk (bounded by the TTFT timeout) and then relays the stream;
    returns the failure when the stream never started, so the caller can fall back."""
    up = plan.upstream
    if (resp.header("content-type") or "").startswith("text/html"):
        # A portal or proxy error page, not an event stream: nothing sent yet, fall back.
        resp.close()
        call.end(plan, OUTCOME["invalid"], 0, "invalid")
        return GatewayError.upstream_failure("invalid", up.name)
    read = resp.reader()
    # The TTFT bound's timeout, and what the read itself may raise.
    failures: tuple[type[BaseException], ...] = (TimeoutError, UpstreamError, *resp.errors)
    try:
        pending = read()
        # A task per stream only when a TTFT bound was asked for.
        first = await (asyncio.wait_for(pending, call.ttft_s) if call.ttft_s else pending)
        kind = "" if first else "broken"
    except failures as e:
        kind = resp.translate(e).kind
    if kind:
        resp.close()
        call.end(plan, OUTCOME[kind], 0)
        return GatewayError.upstream_failure(kind, up.name, " before the first token")
    try:
        await call.gate()
    except GatewayError:
        resp.close()
        call.end(plan, CANCELLED, 0)
        raise
    ingress = call.ingress
    meter = SseMeter(
        ingress.stream_format(up) if ingress is not None else up.provider.stream_format,
        up.model_id,
        monotonic_ms() - elapsed_ms(t0),
        strip_usage=not call.wants_usage,
        include_usage=call.wants_usage,
    )
    meter.scrub_output(call.scrubber)
    call.meter = meter
    try:
        await relay(call, resp, read, first, meter, plan, t0)
    finally:
        resp.close()
    return None


async def relay(
    call: StreamHost,
    resp: UpstreamResponse,
    read: Callable[[], Awaitable[bytes]],
    first: bytes,
    meter: SseMeter,
    plan: PlanInfo,
    t0: float,
) -> None:
    send = call.send
    timing = (b"server-timing", server_timing(call.started, call.log, ttfb_from=t0))
    headers = call.headers(plan, [*_SSE_HEADERS, timing])
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    # Output guardrails run in the meter's own pass: what it returns is already guarded.
    guard = StreamGuard(call.guard, meter) if call.guard is not None and call.guard.output else None
    guard_start = now_ns()
    status: int = 200
    kind = ""
    broken: GatewayError | None = None
    # The per-chunk loop is the hottest Python of a stream: bound methods, no helper calls, the
    # client library's read awaited directly (its exceptions translated around the loop).
    # No secret reaches the client (the meter scrubs the whole events it hands over), and no
    # provider sends more than `max_response_bytes`.
    feed = meter.feed
    room = call.response_limit - len(first)
    chunk = first
    failures: tuple[type[BaseException], ...] = (UpstreamError, *resp.errors)  # a read's
    # One body message, refilled per chunk: `send` is done with a message when it returns
    # (Granian and the gateway's own wrappers read it at once; none keeps it).
    part = {"type": "http.response.body", "body": b"", "more_body": True}
    try:
        while True:
            out = feed(chunk)
            if out:
                part["body"] = out
                await send(part)
            if meter.halted:  # the stream broke, or an output guardrail blocked it
                break
            chunk = await read()
            if not chunk:
                out = meter.finish()
                if out:
                    part["body"] = out
                    await send(part)
                break
            room -= len(chunk)
            if room < 0:
                kind = "too_large"
                break
    except failures as e:
        kind = resp.translate(e).kind
    if kind:
        status = OUTCOME[kind]
        broken = GatewayError.upstream_failure(kind, plan.upstream.name)
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
        event = b"event: error\ndata: " + call.scrubber.scrub(broken.body()) + b"\n\n"
        await send({"type": "http.response.body", "body": event, "more_body": True})
    call.delivered = True  # the client has it all: its leaving now cancels nothing
    if guard is not None:
        guard.report(guard_start)
    call.end(plan, status, meter.output_tokens, kind)
    await send({"type": "http.response.body", "body": b"", "more_body": False})
