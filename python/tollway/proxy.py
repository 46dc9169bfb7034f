"""The OpenAI-compatible proxy: validate, admit, call the target, relay the answer.

Phases (docs/phases.md): read head and body -> validate the body -> `engine.admit` (key,
metadata, model, permission) -> rewrite for the target -> upstream call -> respond (whole
body, or SSE relayed chunk by chunk with the client's disconnect cancelling the upstream).
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import Any, Literal

import msgspec

from tollway.asgi import JSON, Receive, RequestHead, Scope, Send, read_body, send_error
from tollway.engine import Denial, Runtime, Upstream
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
                raise GatewayError(adm.status, adm.message, adm.error_type, adm.code, adm.param)
            target = rt.upstreams[adm.targets[0]]
            req["model"] = target.model_id
            url = target.chat_url if endpoint == "chat" else target.embeddings_url
            call = (url, target, _encode(req), self._timeout_s(head))
            if endpoint == "chat" and req.get("stream") is True:
                await self._stream(call, head.request_id, receive, send)
                return
            admitted = perf_counter()
            resp = await self._post(*call)
            await self._respond(resp, target, head.request_id, send, started, admitted)
        except GatewayError as e:
            if e.status != 499:
                await send_error(send, e, head.request_id)

    async def _post(
        self, url: str, target: Upstream, payload: bytes, timeout_s: float
    ) -> UpstreamResponse:
        try:
            return await self.client.post(url, target.headers, payload, timeout_s)
        except UpstreamError as e:
            status, what, code = _UPSTREAM_FAILURES[e.kind]
            raise GatewayError.upstream(status, f"'{target.name}': {what}", code) from None

    async def _stream(
        self,
        call: tuple[str, Upstream, bytes, float],
        request_id: bytes,
        receive: Receive,
        send: Send,
    ) -> None:
        """Runs a streamed attempt raced against the client leaving, from the first byte on:
        Granian's send() does not fail after the client left; receive() reports it."""
        work = asyncio.ensure_future(self._stream_attempt(call, request_id, send))
        watch = asyncio.ensure_future(receive())
        try:
            await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():
                work.cancel()
                log.info("client disconnected; upstream call to %s cancelled", call[1].name)
            watch.cancel()
        if work.done() and not work.cancelled() and (exc := work.exception()) is not None:
            raise exc

    async def _stream_attempt(
        self, call: tuple[str, Upstream, bytes, float], request_id: bytes, send: Send
    ) -> None:
        target = call[1]
        started = perf_counter()
        try:
            resp = await self._post(*call)
        except GatewayError as e:
            await send_error(send, e, request_id)
            return
        try:
            if resp.status != 200:
                await self._respond(resp, target, request_id, send, started, started)
                return
            headers = [
                *_SSE_HEADERS,
                (b"x-request-id", request_id),
                (b"x-tfy-resolved-model", target.resolved_header),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await self._pump(resp, target, send)
        finally:
            resp.close()

    async def _respond(
        self,
        resp: UpstreamResponse,
        target: Upstream,
        request_id: bytes,
        send: Send,
        started: float,
        admitted: float,
    ) -> None:
        try:
            payload = await resp.read()
        except UpstreamError as e:
            status, what, code = _UPSTREAM_FAILURES[e.kind]
            raise GatewayError.upstream(status, f"'{target.name}': {what}", code) from None
        status = resp.status
        extra: list[tuple[bytes, bytes]] = []
        if status >= 300:
            status, payload, extra = _upstream_error(
                status, payload, target, resp.header("retry-after")
            )
        done = perf_counter()
        timing = (
            f"auth;dur={(admitted - started) * 1000:.3f}, "
            f"model;dur={(done - admitted) * 1000:.3f}, total;dur={(done - started) * 1000:.3f}"
        )
        headers = [
            JSON,
            (b"x-request-id", request_id),
            (b"x-tfy-resolved-model", target.resolved_header),
            (b"server-timing", timing.encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    @staticmethod
    async def _pump(resp: UpstreamResponse, target: Upstream, send: Send) -> None:
        try:
            async for chunk in resp.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as e:
            # The client already has a 200: say so in-band and end without [DONE].
            _, what, code = _UPSTREAM_FAILURES[e.kind]
            err = error_body(f"'{target.name}': {what} mid-stream", "api_error", code, None)
            await send(
                {
                    "type": "http.response.body",
                    "body": b"event: error\ndata: " + err + b"\n\n",
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
