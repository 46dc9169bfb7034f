"""The OpenAI-compatible proxy: validate, admit, then hand the request to a `Call`.

Phases (docs/phases.md): read head and body -> validate the body -> `engine.admit` (key,
metadata, model, permission, routing order, budget, rate limit) -> `Call.run` (attempts,
response, settle). A stream runs raced against the client leaving.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal

from tollway.asgi import Receive, RequestHead, Scope, Send, send_error
from tollway.cache import Capture, ResponseCache
from tollway.engine import Admission, Denial, Runtime, count_prompt_tokens
from tollway.errors import GatewayError
from tollway.guardrails.request import plan_for
from tollway.ingress import Ingress
from tollway.ingress.anthropic import AnthropicIngress, AnthropicSend, adopt_api_key
from tollway.ingress.messages import to_chat_request, validate_messages
from tollway.ingress.responses import (
    ResponseDirectory,
    ResponsesIngress,
    retrieve,
    validate_responses,
)
from tollway.proxy.call import CANCELLED, Call
from tollway.proxy.deadline import BodyReadWatch
from tollway.proxy.leave import LeaveWatch
from tollway.proxy.timing import server_timing
from tollway.proxy.validate import FORBIDDEN_FIELDS, validate_request
from tollway.telemetry import Telemetry, now_ns
from tollway.telemetry.observe import RequestLog
from tollway.upstream import UpstreamClient

if TYPE_CHECKING:
    from tollway.mcp import McpGateway

__all__ = ["FORBIDDEN_FIELDS", "Proxy"]

log = logging.getLogger("tollway.proxy")

# The client APIs the proxy serves; messages and responses are translated to chat.
Endpoint = Literal["chat", "embeddings", "messages", "responses"]


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


def _parse(body: bytes, endpoint: Endpoint) -> tuple[dict[str, Any], Ingress | None]:
    """The chat-shaped request, and the other client API it came in by (if any)."""
    if endpoint == "messages":
        native = validate_messages(body)
        req, lossy = to_chat_request(native)
        return req, AnthropicIngress(native, lossy)
    if endpoint == "responses":
        return validate_responses(body), ResponsesIngress()
    return validate_request(body, "chat" if endpoint == "chat" else "embeddings"), None


def _reply_headers(head: RequestHead, adm: Admission) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-request-id", head.request_id)]
    if adm.applied:
        headers.append((b"x-tfy-applied-configurations", adm.applied.encode()))
    headers.extend(adm.limit_headers)
    return headers


class Proxy:
    """Handles the proxied endpoints for whichever `Runtime` is current."""

    def __init__(
        self,
        runtime: Runtime,
        client: UpstreamClient,
        telemetry: Telemetry | None = None,
        mcp: McpGateway | None = None,
    ) -> None:
        self.runtime = runtime
        self.client = client
        self.telemetry = telemetry
        self.body_watch = BodyReadWatch()
        # A stream's client leaving cancels it.
        self.leave_watch = LeaveWatch()
        # Chat requests naming `mcp_servers` run the agent loop over these tools.
        self.mcp = mcp
        # Which target made each recent Responses API answer, for GET /v1/responses/{id}.
        self.responses = ResponseDirectory()
        # The response cache, made when a config or a request first asks for it.
        self.cache: ResponseCache | None = None

    def _cache(self, rt: Runtime) -> ResponseCache:
        cache = self.cache
        if cache is not None and cache.runtime is rt:
            return cache
        if cache is None or cache.settings != rt.engine.cache_settings:
            count = self.telemetry.metrics.add if self.telemetry is not None else None
            if cache is not None:
                cache.retire()  # a reload changed the backend: close the old one
            cache = self.cache = ResponseCache.for_runtime(rt, count)
        cache.runtime = rt
        return cache

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
        if endpoint == "messages":
            send = AnthropicSend(send)
            adopt_api_key(head, scope["headers"])
        rt = self.runtime
        log = RequestLog(scope["path"], now_ns())
        req: dict[str, Any] | None = None
        adm: Admission | Denial | None = None
        agent = False
        try:
            if head.authorization is None:
                # Refuse before reading a body nobody is entitled to send.
                denial = rt.engine.authenticate(None)
                assert isinstance(denial, Denial)
                raise GatewayError.from_denial(denial)
            settings = rt.settings
            body = await self.body_watch.read(
                receive,
                settings.max_body_bytes,
                head.content_length,
                settings.body_read_timeout_ms / 1000,
            )
            log.request_body, log.logging_config = body, head.logging_config
            req, ingress = _parse(body, endpoint)
            timeouts = self._timeouts(head)
            if endpoint == "chat" and "mcp_servers" in req and self.mcp is not None:
                # The agent loop: every model call in it is recorded on its own.
                agent = True
                from tollway.mcp.agent import run_agent

                await run_agent(self, req, head, scope["headers"], send, timeouts)
                return
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
            capture = None
            if head.cache_config is not None or rt.engine.cache_rules:
                cache = self._cache(rt)
                turn = await cache.begin(rt, adm, head.cache_config, endpoint, body)
                if turn.hit is not None:
                    await cache.replay(turn, send, _reply_headers(head, adm), log)
                    log.cost_usd = rt.engine.settle(adm, [], (0, 0, 0))
                    return
                send = capture = Capture(send, turn, cache)
            call = Call(
                self.client,
                rt,
                "chat" if endpoint == "messages" else endpoint,
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
                self.telemetry is not None
                and (self.telemetry.capture_content or self.telemetry.log_body_cap > 0),
                adm.applied,
                # The admission-time count, reused at settle (chat prompts only).
                size[0] if size[0] and endpoint in ("chat", "messages") else None,
            )
            call.ingress = ingress
            if call.stream:
                await self.leave_watch.run(call.run(), receive, call, req["model"])
            else:
                await call.run()
            if capture is not None:
                capture.keep(log)
            if endpoint == "responses" and log.response_id and log.attempts:
                self.responses.remember(log.response_id, log.attempts[-1].plan.upstream.name)
        except GatewayError as e:
            log.status, log.error_type = e.status, e.code or e.error_type
            if e.status != CANCELLED:
                extra = [(b"server-timing", server_timing(started, log))]
                if isinstance(adm, Admission) and adm.applied:
                    # A refusal after admission (guardrail, upstream): the rules that applied.
                    extra.append((b"x-tfy-applied-configurations", adm.applied.encode()))
                await send_error(send, e, head.request_id, extra)
        finally:
            if self.telemetry is not None and not agent:
                self.telemetry.record_request(
                    rt.engine,
                    log,
                    head.request_id,
                    perf_counter() - started,
                    req,
                    adm,
                    head.traceparent,
                )

    async def retrieve_response(self, scope: Scope, send: Send) -> None:
        """`GET /v1/responses/{id}`, from the account that made it."""
        head = RequestHead(scope["headers"])
        session = getattr(self.client, "session", None)
        try:
            if session is None:
                raise GatewayError(503, "The gateway is starting", "api_error", "not_ready")
            query = scope.get("query_string", b"")
            await retrieve(self.runtime, self.responses, session, head, scope["path"], query, send)
        except GatewayError as e:
            await send_error(send, e, head.request_id)
