"""The OpenAI-compatible proxy: validate, admit, try the targets in order, relay the answer.

Phases (docs/phases.md): read head and body -> validate the body -> `engine.admit` (key,
metadata, model, permission, routing order) -> attempts (rewrite for the target, retries on
the same target, fallbacks to the next) -> respond (whole body, or SSE relayed chunk by chunk,
the client's disconnect cancelling the upstream) -> `engine.settle` with every attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from time import perf_counter
from typing import Any, Literal

import msgspec

from tollway.asgi import JSON, Receive, RequestHead, Scope, Send, read_body, send_error
from tollway.engine import Admission, Denial, PlanInfo, Runtime, Upstream
from tollway.errors import GatewayError, error_body
from tollway.upstream import UpstreamClient, UpstreamError, UpstreamResponse

__all__ = ["Proxy"]

log = logging.getLogger("tollway.proxy")

Endpoint = Literal["chat", "embeddings"]

# Fields that would let a client pick the upstream host or credentials (the SSRF class of
# LLM-gateway CVEs). They are refused, never forwarded.
FORBIDDEN_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "azure_endpoint",
        "azure_ad_token",
        "custom_llm_provider",
        "extra_headers",
        "headers",
        "organization",
        "url",
    }
)
_SSE_HEADERS = (
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
)
_UPSTREAM_FAILURES = {
    "connect": (502, "could not connect to the provider", "upstream_connection_error"),
    "timeout": (504, "the provider did not answer in time", "upstream_timeout"),
    "broken": (502, "the connection to the provider broke", "upstream_connection_error"),
}

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
# settle() codes for failures without an HTTP status (see tollway-core routing.rs).
_OUTCOME = {"connect": 0, "timeout": 1, "broken": 2}
_CANCELLED = 499


class _PromptDetails(msgspec.Struct):
    cached_tokens: int = 0


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None


class _WithUsage(msgspec.Struct):
    usage: _Usage | None = None


_decode_usage = msgspec.json.Decoder(_WithUsage).decode


def _usage(body: bytes) -> tuple[int, int, int]:
    """(input, cached input, output) tokens of a non-streamed answer; zeros when absent."""
    try:
        usage = _decode_usage(body).usage
    except msgspec.DecodeError:
        return (0, 0, 0)
    if usage is None:
        return (0, 0, 0)
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    return (usage.prompt_tokens, cached, usage.completion_tokens)


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class _Failed(msgspec.Struct):
    """An attempt's failure as the client would see it if nothing else works."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


def _validate(body: bytes, endpoint: Endpoint) -> dict[str, Any]:
    """The decoded request, or a 400 naming the field that is wrong."""
    try:
        req = _decode(body)
    except msgspec.DecodeError as e:
        raise GatewayError.bad_request(f"The request body is not valid JSON: {e}") from None
    if type(req) is not dict:
        raise GatewayError.bad_request("The request body must be a JSON object")
    if not FORBIDDEN_FIELDS.isdisjoint(req):
        field = sorted(FORBIDDEN_FIELDS.intersection(req))[0]
        raise GatewayError.bad_request(
            f"'{field}' cannot be set by a client: the gateway decides where requests go",
            field,
        )
    model = req.get("model")
    if type(model) is not str or not model:
        what = "is required" if model is None else "must be a non-empty string"
        raise GatewayError.bad_request(f"'model' {what}", "model")
    if endpoint == "chat":
        messages = req.get("messages")
        if type(messages) is not list or not messages:
            what = "is required" if messages is None else "must be a non-empty list"
            raise GatewayError.bad_request(f"'messages' {what}", "messages")
        stream = req.get("stream")
        if stream is not None and type(stream) is not bool:
            raise GatewayError.bad_request("'stream' must be true or false", "stream")
    elif req.get("input") is None:
        raise GatewayError.bad_request("'input' is required", "input")
    return req


def _upstream_error(
    status: int, body: bytes, target: Upstream, retry_after: str | None
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """What the client sees for a non-2xx answer from the provider."""
    if status in (401, 403):
        # The provider refused *our* credentials; its message may quote part of the key.
        msg = f"The provider rejected the gateway's credentials for '{target.name}'"
        return 502, error_body(msg, "api_error", "upstream_auth_error", None), []
    extra = [(b"retry-after", retry_after.encode())] if status == 429 and retry_after else []
    try:
        parsed = _decode(body)
        if type(parsed) is dict and type(parsed.get("error")) is dict:
            return status, body, extra
    except msgspec.DecodeError:
        pass
    msg = f"The provider for '{target.name}' answered HTTP {status}"
    return status, error_body(msg, "api_error", "upstream_error", None), extra


class Proxy:
    """Handles the proxied endpoints for whichever `Runtime` is current."""

    def __init__(self, runtime: Runtime, client: UpstreamClient) -> None:
        self.runtime = runtime
        self.client = client

    def _timeout_s(self, head: RequestHead) -> float:
        s = self.runtime.settings
        if head.timeout_ms is None:
            return s.request_timeout_ms / 1000
        try:
            ms = int(head.timeout_ms)
        except ValueError:
            ms = 0
        if ms <= 0:
            raise GatewayError.bad_request(
                "x-tfy-request-timeout must be a positive number of milliseconds",
                "x-tfy-request-timeout",
            )
        # Capped by the server: a client may shorten the wait, not hold a worker for ever.
        return min(ms, s.max_request_timeout_ms) / 1000

    async def handle(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        head = RequestHead(scope["headers"])
        rt = self.runtime
        try:
            if head.authorization is None:
                # Refuse before reading a body nobody is entitled to send.
                denial = rt.engine.authenticate(None)
                assert isinstance(denial, Denial)
                raise GatewayError(denial.status, denial.message, denial.error_type, denial.code)
            body = await read_body(receive, rt.settings.max_body_bytes, head.content_length)
            req = _validate(body, endpoint)
            adm = rt.engine.admit(head.authorization, req["model"], head.metadata)
            if isinstance(adm, Denial):
                raise GatewayError(
                    adm.status,
                    adm.message,
                    adm.error_type,
                    adm.code,
                    adm.param,
                    tuple((k.encode(), v.encode()) for k, v in adm.headers),
                )
            call = _Call(self, rt, endpoint, req, adm, head, send, started)
            if call.stream:
                await _race_disconnect(call.run(), receive, call.label)
            else:
                await call.run()
        except GatewayError as e:
            if e.status != _CANCELLED:
                await send_error(send, e, head.request_id)


async def _race_disconnect(work: Any, receive: Receive, label: str) -> None:
    """Runs a streamed request raced against the client leaving, from before the first
    upstream byte: Granian's send() does not fail after the client left; receive() says so."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(receive())
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            log.info("client disconnected; upstream call for %s cancelled", label)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        watch.cancel()
    if not task.cancelled() and (exc := task.exception()) is not None:
        raise exc


class _Call:
    """One admitted request: its attempts across the routing order, and its response."""

    __slots__ = (
        "adm",
        "endpoint",
        "head",
        "outcomes",
        "proxy",
        "req",
        "rt",
        "send",
        "started",
        "stream",
        "timeout_s",
        "usage",
    )

    def __init__(
        self,
        proxy: Proxy,
        rt: Runtime,
        endpoint: Endpoint,
        req: dict[str, Any],
        adm: Admission,
        head: RequestHead,
        send: Send,
        started: float,
    ) -> None:
        self.proxy = proxy
        self.rt = rt
        self.endpoint = endpoint
        self.req = req
        self.adm = adm
        self.head = head
        self.send = send
        self.started = started
        self.stream = endpoint == "chat" and req.get("stream") is True
        self.timeout_s = proxy._timeout_s(head)
        # (target, status, latency_ms, output_tokens) per attempt, for engine.settle().
        self.outcomes: list[tuple[int, int, float, int]] = []
        self.usage = (0, 0, 0)

    @property
    def label(self) -> str:
        return str(self.req.get("model"))

    def _payload(self, plan: PlanInfo) -> bytes:
        req = self.req
        if plan.override_params:
            req = {**req, **plan.override_params}
        req["model"] = plan.upstream.model_id
        return _encode(req)

    def _headers(
        self, plan: PlanInfo, extra: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"x-request-id", self.head.request_id),
            (b"x-tfy-resolved-model", plan.upstream.resolved_header),
        ]
        adm = self.adm
        if adm.applied:
            headers.append((b"x-tfy-applied-configurations", adm.applied.encode()))
        if adm.limit_headers:
            headers.extend((k.encode(), v.encode()) for k, v in adm.limit_headers)
        headers.extend(extra)
        return headers

    async def run(self) -> None:
        try:
            await self._attempts()
        except asyncio.CancelledError:
            if self.outcomes and self.outcomes[-1][1] == -1:
                target, _, t0, tokens = self.outcomes[-1]
                self.outcomes[-1] = (target, _CANCELLED, (perf_counter() - t0) * 1000, tokens)
            raise
        finally:
            done = [o for o in self.outcomes if o[1] >= 0]
            self.rt.engine.settle(self.adm, done, self.usage)

    async def _attempts(self) -> None:
        rt = self.rt
        admitted = perf_counter()
        failed: _Failed | GatewayError | None = None
        for i, pid in enumerate(self.adm.plans):
            plan = rt.plans[pid]
            if i > 0 and not plan.fallback_candidate:
                continue
            up = plan.upstream
            url = up.chat_url if self.endpoint == "chat" else up.embeddings_url
            payload = self._payload(plan)
            budget_s = plan.retry_delay_s * plan.retries
            for attempt in range(plan.retries + 1):
                t0 = perf_counter()
                # Marker for a cancellation mid-attempt: status -1, latency slot holds t0.
                self.outcomes.append((plan.target, -1, t0, 0))
                try:
                    resp = await self.proxy.client.post(url, up.headers, payload, self.timeout_s)
                except UpstreamError as e:
                    self.outcomes[-1] = (plan.target, _OUTCOME[e.kind], _ms(t0), 0)
                    status, what, code = _UPSTREAM_FAILURES[e.kind]
                    failed = GatewayError.upstream(status, f"'{up.name}': {what}", code)
                    # Only a refused connection is retried on the same target: the request
                    # never left. Timeouts and resets may fall back, never repeat here.
                    if e.kind == "connect" and attempt < plan.retries:
                        await asyncio.sleep(plan.retry_delay_s)
                        continue
                    break
                if resp.status < 300:
                    await self._succeed(resp, plan, t0, admitted)
                    return
                payload_err = await self._read_error(resp, plan)
                status = resp.status
                self.outcomes[-1] = (plan.target, status, _ms(t0), 0)
                shown, err_body, extra = _upstream_error(
                    status, payload_err, up, resp.header("retry-after")
                )
                failed = _Failed(shown, err_body, extra)
                if status in plan.retry_on and attempt < plan.retries:
                    wait = plan.retry_delay_s
                    hint = _retry_after_s(resp.header("retry-after")) if status == 429 else None
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
        if isinstance(failed, GatewayError) or failed is None:
            raise failed or GatewayError.upstream(503, "no target could be tried", "no_target")
        await self._fail(failed, rt.plans[self.adm.plans[-1]])

    async def _read_error(self, resp: UpstreamResponse, plan: PlanInfo) -> bytes:
        try:
            return await resp.read()
        except UpstreamError:
            return b""

    async def _fail(self, failed: _Failed, plan: PlanInfo) -> None:
        headers = self._headers(plan, [JSON, *failed.headers])
        await self.send(
            {"type": "http.response.start", "status": failed.status, "headers": headers}
        )
        await self.send({"type": "http.response.body", "body": failed.body, "more_body": False})

    async def _succeed(
        self, resp: UpstreamResponse, plan: PlanInfo, t0: float, admitted: float
    ) -> None:
        if self.stream:
            try:
                await self._relay(resp, plan, t0)
            finally:
                resp.close()
            return
        try:
            payload = await resp.read()
        except UpstreamError as e:
            self.outcomes[-1] = (plan.target, _OUTCOME[e.kind], _ms(t0), 0)
            status, what, code = _UPSTREAM_FAILURES[e.kind]
            raise GatewayError.upstream(status, f"'{plan.upstream.name}': {what}", code) from None
        done = perf_counter()
        self.usage = _usage(payload)
        self.outcomes[-1] = (plan.target, resp.status, _ms(t0), self.usage[2])
        timing = (
            f"auth;dur={(admitted - self.started) * 1000:.3f}, "
            f"model;dur={(done - admitted) * 1000:.3f}, "
            f"total;dur={(done - self.started) * 1000:.3f}"
        )
        headers = self._headers(plan, [JSON, (b"server-timing", timing.encode())])
        await self.send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await self.send({"type": "http.response.body", "body": payload, "more_body": False})

    async def _relay(self, resp: UpstreamResponse, plan: PlanInfo, t0: float) -> None:
        send = self.send
        headers = self._headers(plan, list(_SSE_HEADERS))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        status = 200
        try:
            async for chunk in resp.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as e:
            # The client already has a 200: say so in-band and end without [DONE]; after the
            # first byte there is no fallback (the client may have shown part of an answer).
            status = _OUTCOME[e.kind]
            _, what, code = _UPSTREAM_FAILURES[e.kind]
            err = error_body(f"'{plan.upstream.name}': {what} mid-stream", "api_error", code, None)
            event = b"event: error\ndata: " + err + b"\n\n"
            await send({"type": "http.response.body", "body": event, "more_body": True})
        self.outcomes[-1] = (plan.target, status, _ms(t0), 0)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _ms(t0: float) -> float:
    return (perf_counter() - t0) * 1000
