"""`/mcp/<server>` and `/mcp/virtual/<name>`: the gateway as an MCP server (Streamable HTTP).

POST carries one JSON-RPC message (or a batch); requests are answered with JSON, or with
one SSE event when the client accepts only `text/event-stream`; notifications get 202.
`initialize` hands out an `Mcp-Session-Id`; sessions hold no state in the gateway (any
worker or replica serves any session), so GET (a server-to-client stream) is 405 and
DELETE just says yes. Auth is the gateway key (`Authorization: Bearer`); the upstream call
carries the caller's subject in `x-tfy-user`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from time import perf_counter
from typing import Any

import aiohttp
import msgspec

from tollway.asgi import Receive, Scope, Send, read_body
from tollway.engine import Denial, Engine, Runtime
from tollway.errors import GatewayError
from tollway.mcp.registry import Registry, Target
from tollway.mcp.tools import INVALID_PARAMS, Caller, ToolError, Tools
from tollway.mcp.upstream import PROTOCOL_VERSION, Upstreams
from tollway.telemetry import Record, Telemetry, now_ns
from tollway.telemetry.record import LogPart, ToolRun

__all__ = ["McpGateway"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_VERSIONS = ("2025-06-18", "2025-03-26", "2024-11-05")
_PASSTHROUGH = (
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "prompts/list",
    "prompts/get",
    "completion/complete",
)
_JSON = (b"content-type", b"application/json")


class _Head:
    __slots__ = ("accept", "authorization", "guardrails", "mcp_headers", "metadata", "session")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.authorization = self.metadata = self.guardrails = None
        self.mcp_headers = self.session = None
        self.accept = b""
        for name, value in headers:
            if name == b"authorization":
                self.authorization = value
            elif name == b"accept":
                self.accept = value
            elif name == b"mcp-session-id":
                self.session = value
            elif name == b"x-tfy-mcp-headers":
                self.mcp_headers = value
            elif name == b"x-tfy-metadata":
                self.metadata = value
            elif name == b"x-tfy-guardrails":
                self.guardrails = value


def parse_mcp_headers(raw: bytes | None) -> dict[str, dict[str, str]]:
    """`x-tfy-mcp-headers: {"<server>": {"<header>": "<value>"}}` (credentials per server)."""
    if raw is None:
        return {}
    try:
        value = _decode(raw)
    except msgspec.DecodeError:
        value = None
    ok = isinstance(value, dict) and all(
        isinstance(h, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in h.items())
        for h in value.values()
    )
    if not ok:
        raise GatewayError.bad_request(
            'x-tfy-mcp-headers must be a JSON object {"<server>": {"<header>": "<value>"}}',
            "x-tfy-mcp-headers",
        )
    return value  # type: ignore[no-any-return]


class McpGateway:
    def __init__(
        self,
        runtime: Callable[[], Runtime],
        session: aiohttp.ClientSession,
        telemetry: Telemetry | None,
    ) -> None:
        self.runtime = runtime
        self.telemetry = telemetry
        self.upstreams = Upstreams(session)
        self.tools = Tools(self.upstreams, session, telemetry)
        self._registry: tuple[Engine, Registry] | None = None

    def registry(self, rt: Runtime) -> Registry:
        cached = self._registry
        if cached is None or cached[0] is not rt.engine:
            cached = self._registry = (rt.engine, Registry.from_engine(rt.engine))
        return cached[1]

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = _Head(scope["headers"])
        rt = self.runtime()
        method = scope["method"]
        key = rt.engine.authenticate(head.authorization)
        if isinstance(key, Denial):
            extra = [(b"www-authenticate", b'Bearer realm="tollway"')]
            await _reply(send, 401, _error(None, -32001, key.message), extra)
            return
        target = self.registry(rt).target(scope["path"].removeprefix("/mcp/"))
        if target is None:
            await _reply(send, 404, _error(None, -32601, "Unknown MCP server"))
            return
        if method == "DELETE":
            await _reply(send, 200, b"{}")
            return
        if method != "POST":
            await _reply(send, 405, _error(None, -32600, "Use POST"), [(b"allow", b"POST, DELETE")])
            return
        try:
            body = await read_body(receive, rt.settings.max_body_bytes, None)
            passthrough = parse_mcp_headers(head.mcp_headers)
        except GatewayError as e:
            await _reply(send, e.status, _error(None, -32600, e.message))
            return
        try:
            msg = _decode(body)
        except msgspec.DecodeError:
            await _reply(send, 400, _error(None, -32700, "Parse error: the body is not JSON"))
            return
        k = rt.keys[key]
        sid = head.session.decode(errors="replace")[:128] if head.session else ""
        caller = Caller(key, k.subject, head.metadata, head.guardrails, passthrough, session_id=sid)
        start_ns, t0 = now_ns(), perf_counter()
        try:
            await self._answer(target, rt, caller, msg, head, send, t0)
        finally:
            if self.telemetry is not None and caller.runs:
                rid = os.urandom(12).hex()
                tel = self.telemetry
                self.telemetry.record(
                    Record(
                        request_id=rid,
                        start_ns=start_ns,
                        end_ns=now_ns(),
                        route=scope["path"],
                        key_name=k.name,
                        subject=k.subject,
                        guardrails=caller.guardrail_runs,
                        tools=caller.runs,
                        # In the request log too (row.py writes the tool runs as attempts).
                        log=tool_log_part(caller.runs, tel.log_body_cap) if tel.sinks else None,
                    )
                )

    async def _answer(
        self,
        target: Target,
        rt: Runtime,
        caller: Caller,
        msg: Any,
        head: _Head,
        send: Send,
        t0: float,
    ) -> None:
        batch = isinstance(msg, list)
        answers = []
        session_id: bytes | None = None
        for m in msg if batch else [msg]:
            if not isinstance(m, dict) or m.get("jsonrpc") != "2.0" or "method" not in m:
                answers.append(
                    _error_obj(
                        m.get("id") if isinstance(m, dict) else None,
                        -32600,
                        "Invalid JSON-RPC request",
                    )
                )
                continue
            if "id" not in m:
                continue  # a notification (initialized, cancelled, ...): nothing to answer
            if m["method"] == "initialize":
                session_id = os.urandom(16).hex().encode()
            answers.append(await self._dispatch(rt, target, caller, m))
        if not answers:
            await _reply(send, 202, b"")
            return
        out = _encode(answers if batch else answers[0])
        timing = f"tool;dur={(perf_counter() - t0) * 1000:.2f}".encode()
        extra = [(b"server-timing", timing)]
        if session_id:
            extra.append((b"mcp-session-id", session_id))
        if b"application/json" not in head.accept and b"text/event-stream" in head.accept:
            headers = [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache"),
                *extra,
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            event = b"event: message\ndata: " + out + b"\n\n"
            await send({"type": "http.response.body", "body": event, "more_body": False})
            return
        await _reply(send, 200, out, extra)

    async def _dispatch(
        self, rt: Runtime, target: Target, caller: Caller, m: dict[str, Any]
    ) -> dict[str, Any]:
        rid, method = m["id"], m["method"]
        raw = m.get("params")
        params: dict[str, Any] = raw if isinstance(raw, dict) else {}
        try:
            if method == "initialize":
                result = await self._initialize(target, caller, params)
            elif method == "ping":
                result = {}
            elif method == "tools/list":
                result = {"tools": await self.tools.list_tools(rt, target, caller)}
            elif method == "tools/call":
                name, args = params.get("name"), params.get("arguments") or {}
                if not isinstance(name, str) or not isinstance(args, dict):
                    raise ToolError(INVALID_PARAMS, "tools/call needs a name and object arguments")
                result = await self.tools.call_tool(rt, target, name, args, caller)
            elif method in _PASSTHROUGH and not target.virtual:
                result = await self.tools.request(target.servers[0], method, params, caller)
            elif method in ("resources/list", "prompts/list"):
                result = {method.split("/")[0]: []}  # a virtual server has only tools
            else:
                raise ToolError(-32601, f"Method not found: {method[:64]}")
        except ToolError as e:
            return {"jsonrpc": "2.0", "id": rid, "error": e.to_json()}
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    async def _initialize(
        self, target: Target, caller: Caller, params: dict[str, Any]
    ) -> dict[str, Any]:
        asked = params.get("protocolVersion")
        version = asked if asked in _VERSIONS else PROTOCOL_VERSION
        caps: dict[str, Any] = {"tools": {"listChanged": False}}
        if not target.virtual:
            spec = target.servers[0]
            # A server that is down now still lets the client connect.
            with contextlib.suppress(ToolError):
                await self.tools.request(spec, "ping", None, caller)
            upstream = self.upstreams.capabilities(spec)
            for cap in ("resources", "prompts", "completions"):
                if cap in upstream:
                    caps[cap] = upstream[cap]
        info = {"name": f"tollway/{target.name}", "version": "0.1"}
        out: dict[str, Any] = {"protocolVersion": version, "capabilities": caps, "serverInfo": info}
        desc = target.servers[0].description if not target.virtual else None
        if desc:
            out["instructions"] = desc
        return out


def _error_obj(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


def _error(rid: Any, code: int, message: str) -> bytes:
    return _encode(_error_obj(rid, code, message))


async def _reply(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [_JSON, *(extra or ())] if body else list(extra or ())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def tool_log_part(runs: list[ToolRun], cap: int) -> LogPart:
    """The request-log part of an MCP request: the first tool call's arguments and result as
    its bodies when bodies are kept (they are only captured when content is)."""
    first = runs[0]
    request_body = first.arguments[:cap] if cap > 0 and first.arguments else None
    response_body = first.result[:cap] if cap > 0 and first.result else None
    return LogPart(request_body=request_body, response_body=response_body)
