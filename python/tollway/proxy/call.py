"""One admitted request: attempts across the routing order, the response, and settle.

Retries stay on a target only for its `on_status_codes` or a refused connection (the request
never left); timeouts, resets and `fallback_status_codes` move to the next fallback candidate.
A stream is committed to a target at its first chunk: until then it may still fall back
(a TTFT timeout, an empty or broken start), after it never. Settle runs in `finally`, so a
client that leaves mid-stream is still charged for what it was sent (status 499).
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import TYPE_CHECKING, Any

import aiohttp

from tollway.asgi import JSON, RequestHead, Send
from tollway.engine import Admission, PlanInfo, Runtime, SseMeter, count_prompt_tokens
from tollway.errors import GatewayError
from tollway.guardrails.request import (
    GuardPlan,
    guard_output,
    mutate_input,
    validate_input,
    webhook_output,
)
from tollway.providers import TranslationError
from tollway.proxy.responses import (
    CANCELLED,
    OUTCOME,
    OUTCOME_NAMES,
    Failed,
    answer_of,
    error_response,
    first_message,
    retry_after_s,
)
from tollway.proxy.stream import start_stream
from tollway.telemetry.observe import AttemptLog, RequestLog
from tollway.upstream import UpstreamError, UpstreamResponse

if TYPE_CHECKING:
    from tollway.upstream import UpstreamClient

__all__ = ["CANCELLED", "Call"]

_SSE_HEADERS = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"))


class Call:
    """Runs one admitted request to completion (see the module docstring)."""

    __slots__ = (
        "adm",
        "applied",
        "capture_content",
        "client",
        "endpoint",
        "gated",
        "guard",
        "guard_task",
        "head",
        "log",
        "meter",
        "raw",
        "req",
        "rt",
        "send",
        "session",
        "started",
        "stream",
        "timeout_s",
        "ttft_s",
        "usage",
        "wants_usage",
    )

    def __init__(
        self,
        client: UpstreamClient,
        rt: Runtime,
        endpoint: str,
        req: dict[str, Any],
        raw: bytes,
        adm: Admission,
        head: RequestHead,
        send: Send,
        started: float,
        timeouts: tuple[float, float | None],
        log: RequestLog,
        guard: GuardPlan | None = None,
        session: aiohttp.ClientSession | None = None,
        capture_content: bool = False,
        applied: str = "",
    ) -> None:
        self.log = log
        self.guard = guard
        self.session = session
        self.guard_task: asyncio.Task[GatewayError | None] | None = None
        self.gated = False
        # Answer text goes into spans only when tracing keeps request data.
        self.capture_content = capture_content
        # x-tfy-applied-configurations: the engine's rule ids, plus the guardrails rule.
        self.applied = applied.encode() if applied else b""
        self.client = client
        self.rt = rt
        self.endpoint = endpoint
        self.req = req
        self.raw = raw
        self.adm = adm
        self.head = head
        self.send = send
        self.started = started
        self.timeout_s, self.ttft_s = timeouts
        self.stream = endpoint == "chat" and req.get("stream") is True
        options = req.get("stream_options")
        self.wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        if self.stream and not self.wants_usage:
            # Every stream is metered: ask for usage, and strip that chunk for the client.
            req["stream_options"] = {**(options or {}), "include_usage": True}
        self.usage = (0, 0, 0)
        self.meter: SseMeter | None = None

    def _begin(self, plan: PlanInfo, t0: float) -> None:
        attempts = self.log.attempts
        reason = ""
        if attempts and attempts[-1].plan is not plan:
            prev = attempts[-1]
            reason = str(prev.status) if prev.status else prev.error_type
        attempts.append(AttemptLog(plan, t0 - self.started, fallback_reason=reason))

    def end(self, plan: PlanInfo, outcome: int, tokens: int) -> None:
        """Records how the current attempt ended, once, for both settle and telemetry."""
        a = self.log.attempts[-1]
        a.end_s = perf_counter() - self.started
        a.outcome, a.output_tokens = outcome, tokens
        if outcome >= 100:
            a.status = outcome
            a.error_type = "" if outcome < 400 else str(outcome)
        else:
            a.error_type = OUTCOME_NAMES[outcome]

    def _payload(self, plan: PlanInfo) -> bytes:
        req = {**self.req, **plan.override_params} if plan.override_params else self.req
        try:
            return plan.upstream.provider.request_body(req, plan.upstream.model_id)
        except TranslationError as e:
            raise GatewayError.bad_request(str(e)) from None

    def headers(
        self, plan: PlanInfo, extra: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"x-request-id", self.head.request_id),
            (b"x-tfy-resolved-model", plan.upstream.resolved_header),
        ]
        adm = self.adm
        if self.applied:
            headers.append((b"x-tfy-applied-configurations", self.applied))
        if adm.limit_headers:
            headers.extend((k.encode(), v.encode()) for k, v in adm.limit_headers)
        headers.extend(extra)
        return headers

    async def run(self) -> None:
        try:
            if self.guard is not None:
                await self._guard_input(self.guard)
            await self._attempts()
        except asyncio.CancelledError:
            blocked = self._input_verdict()
            if blocked is not None:
                # An input guardrail blocked while the model call ran: that call is what was
                # cancelled, not this request.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                self._cancel_marker()
                self.log.status, self.log.error_type = blocked.status, blocked.code or ""
                raise blocked from None
            self._cancel_marker()
            self.log.status, self.log.error_type = CANCELLED, "client_disconnected"
            raise
        finally:
            if self.guard_task is not None and not self.guard_task.done():
                self.guard_task.cancel()
            if self.meter is not None:
                self.usage = self._stream_usage(self.meter)
            # Settle what ended (an attempt still in flight was marked cancelled above).
            done = [
                (a.plan.target, a.outcome, (a.end_s - a.start_s) * 1000, a.output_tokens)
                for a in self.log.attempts
                if a.outcome >= 0
            ]
            self.log.usage = self.usage
            self.log.cost_usd = self.rt.engine.settle(self.adm, done, self.usage)
            meter = self.meter
            if meter is not None:
                log = self.log
                log.ttft_ms, log.itl_mean_ms = meter.ttft_ms, meter.itl_mean_ms
                log.itl_max_ms, log.response_id = meter.itl_max_ms, meter.response_id or ""
                log.finish_reasons = [meter.finish_reason] if meter.finish_reason else []

    def _cancel_marker(self) -> None:
        attempts = self.log.attempts
        if attempts and attempts[-1].outcome == -1:
            self.end(attempts[-1].plan, CANCELLED, attempts[-1].output_tokens)

    async def _guard_input(self, guard: GuardPlan) -> None:
        """Input mutate now, in order; input validate as a task beside the model call."""
        if guard.input_mutate:
            await mutate_input(guard, self.req, self.session)
        if not guard.input_validate:
            return
        current = asyncio.current_task()
        task = asyncio.ensure_future(validate_input(guard, self.req, self.adm, self.session))

        def on_done(t: asyncio.Task[GatewayError | None]) -> None:
            # Cancel the model call at once on a block, unless the response is already
            # waiting for this verdict at the gate (it will raise it there).
            if not self.gated and current is not None and self._input_verdict() is not None:
                current.cancel()

        task.add_done_callback(on_done)
        self.guard_task = task

    def _input_verdict(self) -> GatewayError | None:
        t = self.guard_task
        if t is None or not t.done() or t.cancelled() or t.exception() is not None:
            return None
        return t.result()

    async def gate(self) -> None:
        """Nothing reaches the client before the input guardrails' verdict."""
        self.gated = True
        t = self.guard_task
        if t is not None:
            verdict = await t
            if verdict is not None:
                raise verdict

    def _stream_usage(self, meter: SseMeter) -> tuple[int, int, int]:
        """The provider's usage, or (stream cut short) the local count of what was seen."""
        prompt = meter.prompt_tokens
        if prompt is None:
            prompt = count_prompt_tokens(self.raw, str(self.req.get("model", "")))
        return (prompt, meter.cached_tokens or 0, meter.output_tokens)

    async def _attempts(self) -> None:
        rt = self.rt
        admitted = perf_counter()
        failed: Failed | GatewayError | None = None
        for i, pid in enumerate(self.adm.plans):
            plan = rt.plans[pid]
            if i > 0 and not plan.fallback_candidate:
                continue
            up = plan.upstream
            url = up.chat_url if self.endpoint == "chat" else up.embeddings_url
            if url is None:
                failed = GatewayError.bad_request(f"'{up.name}' has no embeddings API", "model")
                continue
            payload = self._payload(plan)
            budget_s = plan.retry_delay_s * plan.retries
            for attempt in range(plan.retries + 1):
                t0 = perf_counter()
                self._begin(plan, t0)
                try:
                    resp = await self.client.post(url, up.headers, payload, self.timeout_s)
                except UpstreamError as e:
                    self.end(plan, OUTCOME[e.kind], 0)
                    failed = GatewayError.upstream_failure(e.kind, up.name)
                    # Only a refused connection is retried on the same target: the request
                    # never left. Timeouts and resets may fall back, never repeat here.
                    if e.kind == "connect" and attempt < plan.retries:
                        await asyncio.sleep(plan.retry_delay_s)
                        continue
                    break
                if resp.status < 300:
                    if not self.stream:
                        await self._respond(resp, plan, admitted)
                        return
                    started = await start_stream(self, resp, plan, t0)
                    if started is None:
                        return
                    failed = started
                    break
                body = await self._read_error(resp)
                status = resp.status
                self.end(plan, status, 0)
                body = up.provider.response_body(status, body, up.model_id)
                failed = Failed(*error_response(status, body, up.name, resp.header("retry-after")))
                if status in plan.retry_on and attempt < plan.retries:
                    wait = plan.retry_delay_s
                    hint = retry_after_s(resp.header("retry-after")) if status == 429 else None
                    if hint is not None:
                        if hint > budget_s:
                            break  # the provider asks for longer than we may wait here
                        wait = max(wait, hint)
                    await asyncio.sleep(wait)
                    continue
                if status not in plan.fallback_on:
                    await self._fail(failed, plan)
                    return
                break
        await self.gate()
        if isinstance(failed, GatewayError) or failed is None:
            raise failed or GatewayError.no_target()
        await self._fail(failed, rt.plans[self.adm.plans[-1]])

    @staticmethod
    async def _read_error(resp: UpstreamResponse) -> bytes:
        try:
            return await resp.read()
        except UpstreamError:
            return b""

    async def _fail(self, failed: Failed, plan: PlanInfo) -> None:
        await self.gate()
        headers = self.headers(plan, [JSON, *failed.headers])
        self.log.status = failed.status
        start = {"type": "http.response.start", "status": failed.status, "headers": headers}
        await self.send(start)
        await self.send({"type": "http.response.body", "body": failed.body, "more_body": False})

    async def _respond(self, resp: UpstreamResponse, plan: PlanInfo, admitted: float) -> None:
        up = plan.upstream
        try:
            payload = await resp.read()
        except UpstreamError as e:
            self.end(plan, OUTCOME[e.kind], 0)
            raise GatewayError.upstream_failure(e.kind, up.name) from None
        payload = up.provider.response_body(resp.status, payload, up.model_id)
        await self.gate()
        if self.guard is not None and self.guard.output:
            guarded = guard_output(self.guard, payload)
            if isinstance(guarded, GatewayError):
                self.end(plan, resp.status, 0)
                raise guarded
            payload = guarded
        if self.guard is not None and self.guard.output_hooks:
            hooked = await webhook_output(self.guard, payload, self.session)
            if isinstance(hooked, GatewayError):
                self.end(plan, resp.status, 0)
                raise hooked
            payload = hooked
        done = perf_counter()
        if self.capture_content:
            self.log.output_text = first_message(payload)
        self.usage, self.log.response_id, self.log.response_model, self.log.finish_reasons = (
            answer_of(payload)
        )
        self.end(plan, resp.status, self.usage[2])
        timing = (
            f"auth;dur={(admitted - self.started) * 1000:.3f}, "
            f"model;dur={(done - admitted) * 1000:.3f}, "
            f"total;dur={(done - self.started) * 1000:.3f}"
        )
        headers = self.headers(plan, [JSON, (b"server-timing", timing.encode())])
        self.log.status = resp.status
        await self.send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await self.send({"type": "http.response.body", "body": payload, "more_body": False})
