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
from tollway.engine import Admission, PlanInfo, Runtime, SseMeter, Upstream
from tollway.errors import GatewayError
from tollway.guardrails.request import (
    GuardPlan,
    guard_input,
    guard_input_hooked,
    guard_output,
    validate_hooks,
    webhook_output,
)
from tollway.providers import TranslationError
from tollway.proxy.responses import (
    CANCELLED,
    ERROR_TYPES,
    OUTCOME,
    OUTCOME_NAMES,
    Failed,
    read_answer,
    read_failure,
    retry_after_s,
)
from tollway.proxy.scrub import scrub_failure
from tollway.proxy.stream import meter_into_log, start_stream
from tollway.proxy.timing import server_timing
from tollway.proxy.usage import USAGE_ESTIMATED, estimate_usage, prompt_as_sent, stream_usage
from tollway.telemetry.observe import RequestLog
from tollway.upstream import UpstreamError, UpstreamResponse

if TYPE_CHECKING:
    from tollway.ingress import Ingress
    from tollway.upstream import UpstreamClient

__all__ = ["CANCELLED", "Call"]


class Call:
    """Runs one admitted request to completion (see the module docstring)."""

    __slots__ = (
        "adm",
        "applied",
        "capture_content",
        "client",
        "delivered",
        "endpoint",
        "gated",
        "guard",
        "guard_task",
        "head",
        "ingress",
        "log",
        "meter",
        "prompt",
        "raw",
        "req",
        "response_limit",
        "rt",
        "scrubber",
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
        raw: bytes | None,
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
        prompt: int | None = None,
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
        # Input tokens as sent, once known: the admission-time count (budgets), until an input
        # guardrail rewrites the prompt (then `raw` is None too: it is not what is sent).
        self.prompt = prompt
        self.adm = adm
        self.head = head
        self.send = send
        self.started = started
        self.timeout_s, self.ttft_s = timeouts
        self.stream = endpoint != "embeddings" and req.get("stream") is True
        options = req.get("stream_options")
        self.wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        # Another client API (/v1/messages, /v1/responses), set by the handler.
        self.ingress: Ingress | None = None
        if self.stream and not self.wants_usage and endpoint == "chat":
            # Every stream is metered: ask for usage, and strip that chunk for the client.
            req["stream_options"] = {**(options or {}), "include_usage": True}
        # (input, cached input, output, cache write) tokens.
        self.usage = (0, 0, 0, 0)
        self.meter: SseMeter | None = None
        self.delivered = False  # the stream relay sets it: the client has it all
        # Every provider secret and the request's own key out of what reaches the client (a
        # stream's meter takes the same object).
        self.scrubber = rt.scrubber.for_request(head.authorization)
        self.response_limit = rt.settings.max_response_bytes

    @property
    def answered(self) -> bool:
        """The client has the whole answer: the relay sent it, or the meter read its end."""
        meter = self.meter
        return self.delivered or (meter is not None and meter.done)

    def end(self, plan: PlanInfo, outcome: int, tokens: int, kind: str = "") -> None:
        """Records how the current attempt ended, once, for both settle and telemetry; `kind`
        names an upstream failure that shares its settle code with others (`too_large`)."""
        a = self.log.attempts[-1]
        a.end_s = perf_counter() - self.started
        a.outcome, a.output_tokens = outcome, tokens
        if outcome >= 100:
            a.status = outcome
            a.error_type = "" if outcome < 400 else str(outcome)
        else:
            a.error_type = ERROR_TYPES.get(kind) or OUTCOME_NAMES[outcome]

    def _payload(self, plan: PlanInfo) -> bytes:
        req = {**self.req, **plan.override_params} if plan.override_params else self.req
        try:
            if self.ingress is not None:
                native = self.ingress.payload(plan, self.guard)
                if native is not None:
                    return native
            return plan.upstream.provider.request_body(req, plan.upstream.model_id)
        except TranslationError as e:
            raise GatewayError.bad_request(str(e)) from None

    def headers(
        self, plan: PlanInfo, extra: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """The request id, the target, the rules that applied, the rate-limit state, `extra`."""
        applied = [(b"x-tfy-applied-configurations", self.applied)] if self.applied else []
        target = (b"x-tfy-resolved-model", plan.upstream.resolved_header)
        return [(b"x-request-id", self.head.request_id), target, *applied,
                *self.adm.limit_headers, *extra]  # fmt: skip

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
                self.usage = stream_usage(self.meter, self.prompt_tokens, self.log)
            # Settle what ended (an attempt still in flight was marked cancelled above).
            done = [
                (a.plan.target, a.outcome, (a.end_s - a.start_s) * 1000, a.output_tokens)
                for a in self.log.attempts
                if a.outcome >= 0
            ]
            self.log.usage = self.usage
            u = self.usage
            self.log.cost_usd = self.rt.engine.settle(self.adm, done, (u[0], u[1], u[2]), u[3])
            if self.meter is not None:
                meter_into_log(self.meter, self.log, self.capture_content)

    def prompt_tokens(self) -> int:
        """The request's input tokens as sent, counted at most once (`prompt_as_sent`)."""
        if self.prompt is None:
            self.prompt = prompt_as_sent(self.endpoint, self.req, self.raw, self.log)
        return self.prompt

    def _cancel_marker(self) -> None:
        attempts = self.log.attempts
        if attempts and attempts[-1].outcome == -1:
            self.end(attempts[-1].plan, CANCELLED, attempts[-1].output_tokens)

    async def _guard_input(self, guard: GuardPlan) -> None:
        """Input mutate now, in order; built-in validators now; webhook validators as a task
        beside the model call."""
        if guard.input_steps:  # webhook mutators among them: in the order listed
            changed, verdict = await guard_input_hooked(guard, self.req, self.adm, self.session)
        else:
            changed, verdict = guard_input(guard, self.req, self.adm)
        if changed:
            self.prompt, self.raw = None, None  # the prompt sent is not the one received
        if verdict is not None:
            raise verdict
        hooks = guard.input_hooks
        if not hooks:
            return
        current = asyncio.current_task()
        task = asyncio.ensure_future(validate_hooks(guard, self.req, hooks, self.session))

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

    async def _post(self, up: Upstream, url: str, payload: bytes) -> UpstreamResponse:
        if up.auth is not None:  # a signature or a short-lived token, per attempt
            return await up.auth.post(self.client, url, up.headers, payload, self.timeout_s)
        return await self.client.post(url, up.headers, payload, self.timeout_s)

    async def _attempts(self) -> None:
        rt = self.rt
        failed: Failed | GatewayError | None = None
        for i, pid in enumerate(self.adm.plans):
            plan = rt.plans[pid]
            if i > 0 and not plan.fallback_candidate:
                continue
            up = plan.upstream
            ingress = self.ingress
            url = ingress.url(up) if ingress is not None else up.url(self.endpoint, self.stream)
            if url is None:
                failed = GatewayError.bad_request(
                    f"'{up.name}' has no {self.endpoint} API", "model"
                )
                continue
            payload = self._payload(plan)
            budget_s = plan.retry_delay_s * plan.retries
            for attempt in range(plan.retries + 1):
                t0 = perf_counter()
                self.log.begin(plan, t0 - self.started)
                try:
                    resp = await self._post(up, url, payload)
                except UpstreamError as e:
                    self.end(plan, OUTCOME[e.kind], 0, e.kind)
                    failed = GatewayError.upstream_failure(e.kind, up.name)
                    # Only a refused connection is retried on the same target: the request
                    # never left. Timeouts and resets may fall back, never repeat here.
                    if e.kind == "connect" and attempt < plan.retries:
                        await asyncio.sleep(plan.retry_delay_s)
                        continue
                    break
                if resp.status < 300:
                    # A lying or broken answer (or stream start) falls back like a 502 would.
                    failed = await (
                        start_stream(self, resp, plan, t0)
                        if self.stream
                        else self._respond(resp, plan)
                    )
                    if failed is None:
                        return
                    break
                status = resp.status
                failed = await self._failure(resp, plan)
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

    async def _failure(self, resp: UpstreamResponse, plan: PlanInfo) -> Failed:
        """A non-2xx answer as the client would see it: OpenAI-shaped, without secrets."""
        self.end(plan, resp.status, 0)
        failed = await read_failure(resp, plan.upstream, self.response_limit, self.req)
        return scrub_failure(self.scrubber, failed)

    async def _fail(self, failed: Failed, plan: PlanInfo) -> None:
        await self.gate()
        timing = (b"server-timing", server_timing(self.started, self.log))
        headers = self.headers(plan, [JSON, *failed.headers, timing])
        self.log.status = failed.status
        start = {"type": "http.response.start", "status": failed.status, "headers": headers}
        await self.send(start)
        await self.send({"type": "http.response.body", "body": failed.body, "more_body": False})

    async def _respond(self, resp: UpstreamResponse, plan: PlanInfo) -> GatewayError | None:
        """Relays a non-streamed 2xx answer; returns the failure (unreadable, too large, not
        an answer) when the next fallback candidate should be tried instead."""
        up = plan.upstream
        ingress = None if self.ingress is None else self.ingress.answer_of
        chat = self.endpoint != "embeddings"
        read = await read_answer(resp, up, self.req, chat, ingress, self.response_limit)
        if isinstance(read, str):
            self.end(plan, OUTCOME[read], 0, read)
            return GatewayError.upstream_failure(read, up.name)
        upstream, payload, answer = read
        translated = payload
        await self.gate()
        if self.guard is not None and self.guard.output:
            guarded = guard_output(self.guard, payload, answer.contents)  # texts read once
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
        if self.ingress is not None:
            # The client's API: the provider's own body when nothing changed the answer.
            payload = self.ingress.answer(payload, upstream if payload is translated else None, up)
        payload = self.scrubber.scrub(payload)
        log = self.log
        if self.capture_content:
            log.output_text = answer.text
        extra = [JSON]
        if answer.usage is None:  # never charged 0: the local tokenizer's count, marked
            self.usage = estimate_usage(self.endpoint, self.prompt_tokens, answer.text, up.model_id)
            extra.append(USAGE_ESTIMATED)
            log.usage_estimated = True
        else:
            self.usage = answer.usage
        log.response_id, log.response_model = answer.id, answer.model
        log.finish_reasons = answer.finish_reasons
        self.end(plan, resp.status, self.usage[2])
        extra.append((b"server-timing", server_timing(self.started, log)))
        headers = self.headers(plan, extra)
        log.status = resp.status
        await self.send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await self.send({"type": "http.response.body", "body": payload, "more_body": False})
        return None
