"""The OpenAI-compatible proxy: validate, admit, then hand the request to a `Call`.

Phases (docs/phases.md): read head and body -> validate the body -> `engine.admit` (key,
metadata, model, permission, routing order, budget, rate limit) -> `Call.run` (attempts,
response, settle). A stream runs raced against the client leaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from time import perf_counter
from typing import Any, Literal

import msgspec

from tollway.asgi import Receive, RequestHead, Scope, Send, read_body, send_error
from tollway.engine import Admission, Denial, Runtime, count_prompt_tokens
from tollway.errors import GatewayError
from tollway.guardrails.request import plan_for
from tollway.proxy.call import CANCELLED, Call
from tollway.telemetry import Telemetry, now_ns
from tollway.telemetry.observe import RequestLog, build_record
from tollway.upstream import UpstreamClient

__all__ = ["FORBIDDEN_FIELDS", "Proxy"]

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


def _request_size(req: dict[str, Any], body: bytes) -> tuple[int, int | None]:
    """(prompt tokens, max_tokens) for the cost a budget reserves at admission."""
    limit = req.get("max_completion_tokens", req.get("max_tokens"))
    max_tokens = limit if type(limit) is int and limit >= 0 else None
    return count_prompt_tokens(body, req["model"]), max_tokens


def _positive_ms(raw: bytes, header: str) -> int:
    try:
        ms = int(raw)
    except ValueError:
        ms = 0
    if ms <= 0:
        raise GatewayError.bad_request(
            f"{header} must be a positive number of milliseconds", header
        )
    return ms


class Proxy:
    """Handles the proxied endpoints for whichever `Runtime` is current."""

    def __init__(
        self, runtime: Runtime, client: UpstreamClient, telemetry: Telemetry | None = None
    ) -> None:
        self.runtime = runtime
        self.client = client
        self.telemetry = telemetry

    def _timeouts(self, head: RequestHead) -> tuple[float, float | None]:
        """(per-attempt, first-token) seconds; client values are capped by the server."""
        s = self.runtime.settings
        attempt = s.request_timeout_ms
        if head.timeout_ms is not None:
            attempt = min(
                _positive_ms(head.timeout_ms, "x-tfy-request-timeout"), s.max_request_timeout_ms
            )
        ttft = None
        if head.ttft_timeout_ms is not None:
            ttft = min(_positive_ms(head.ttft_timeout_ms, "x-tfy-ttft-timeout-ms"), attempt) / 1000
        return attempt / 1000, ttft

    async def handle(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        head = RequestHead(scope["headers"])
        rt = self.runtime
        log = RequestLog(scope["path"], now_ns())
        req: dict[str, Any] | None = None
        adm: Admission | Denial | None = None
        try:
            if head.authorization is None:
                # Refuse before reading a body nobody is entitled to send.
                denial = rt.engine.authenticate(None)
                assert isinstance(denial, Denial)
                raise GatewayError.from_denial(denial)
            body = await read_body(receive, rt.settings.max_body_bytes, head.content_length)
            req = _validate(body, endpoint)
            timeouts = self._timeouts(head)
            size = _request_size(req, body) if rt.engine.has_budgets else (0, None)
            adm = rt.engine.admit(
                head.authorization, req["model"], head.metadata, head.guardrails, *size
            )
            if isinstance(adm, Denial):
                raise GatewayError.from_denial(adm)
            guard = None
            if rt.guardrails is not None:
                guard = plan_for(rt.guardrails, rt.guard_infos, adm, log.guardrails)
            session = getattr(self.client, "session", None)
            call = Call(
                self.client,
                rt,
                endpoint,
                req,
                body,
                adm,
                head,
                send,
                started,
                timeouts,
                log,
                guard,
                session,
                self.telemetry is not None and self.telemetry.capture_content,
                adm.applied,
            )
            if call.stream:
                await _race_disconnect(call.run(), receive, req["model"])
            else:
                await call.run()
        except GatewayError as e:
            log.status, log.error_type = e.status, e.code or e.error_type
            if e.status != CANCELLED:
                await send_error(send, e, head.request_id)
        finally:
            if self.telemetry is not None:
                self.telemetry.record(
                    build_record(
                        rt,
                        log,
                        head.request_id,
                        perf_counter() - started,
                        req,
                        adm,
                        head.traceparent,
                        self.telemetry.capture_content,
                    )
                )


async def _race_disconnect(work: Coroutine[Any, Any, None], receive: Receive, label: str) -> None:
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
