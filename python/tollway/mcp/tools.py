"""Listing and calling tools for one caller, with the gateway's policy on every call:
the key's `allowed_tools`, the rate-limit rules, pre/post-tool guardrails, the server's
circuit breaker, metrics. Used by the MCP endpoints and by the agent loop alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import aiohttp
import msgspec

from tollway.engine import Denial, Runtime, admit_tool, tool_allowed
from tollway.mcp.policy import Blocked, tool_guard
from tollway.mcp.registry import ServerSpec, Target
from tollway.mcp.upstream import RpcError, Unavailable, Upstreams
from tollway.telemetry import GuardrailRun, Telemetry, ToolRun, now_ns

__all__ = ["Caller", "ToolError", "Tools"]

# JSON-RPC error codes of the gateway's refusals (docs/mcp.md).
INVALID_PARAMS = -32602
FORBIDDEN = -32003
RATE_LIMITED = -32029
GUARDRAIL_BLOCKED = -32040
UNAVAILABLE = -32050
_MAX_PAGES = 20


class ToolError(Exception):
    """A JSON-RPC error for the client, with data naming the rule, guardrail or server."""

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


_ERROR_TYPES = {
    FORBIDDEN: "forbidden",
    RATE_LIMITED: "rate_limited",
    INVALID_PARAMS: "invalid_params",
    GUARDRAIL_BLOCKED: "guardrail_blocked",
    UNAVAILABLE: "unavailable",
}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls, with what request headers (metadata, guardrails, passthrough credentials);
    `runs` collects the request's MCP calls for its telemetry record."""

    key: int
    subject: str
    metadata_header: bytes | None
    guardrails_header: bytes | None
    passthrough: dict[str, dict[str, str]]
    runs: list[ToolRun] = field(default_factory=list)
    guardrail_runs: list[GuardrailRun] = field(default_factory=list)
    session_id: str = ""


class Tools:
    def __init__(
        self,
        upstreams: Upstreams,
        session: aiohttp.ClientSession | None,
        telemetry: Telemetry | None,
    ) -> None:
        self.upstreams = upstreams
        self.session = session
        self.telemetry = telemetry

    def count(self, name: str, labels: tuple[str, ...], value: float = 1.0) -> None:
        if self.telemetry is not None:
            self.telemetry.metrics.add(name, labels, value)

    def observe(self, name: str, labels: tuple[str, ...], seconds: float) -> None:
        if self.telemetry is not None:
            self.telemetry.metrics.observe_ms(name, labels, seconds * 1000)

    async def list_tools(self, rt: Runtime, target: Target, caller: Caller) -> list[dict[str, Any]]:
        """The tools of `target` this caller may use, as the upstream describes them."""
        out: list[dict[str, Any]] = []
        for spec in target.servers:
            for tool in await self.upstream_tools(spec, caller):
                name = tool.get("name")
                if not isinstance(name, str):
                    continue
                if target.tools is not None and target.tools.get(name) != (spec.name, name):
                    continue
                if spec.exposes(name) and tool_allowed(rt.engine, caller.key, spec.name, name):
                    out.append(tool)
        return out

    async def upstream_tools(self, spec: ServerSpec, caller: Caller) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor = None
        for _ in range(_MAX_PAGES):
            params = {"cursor": cursor} if cursor else None
            result = await self.request(spec, "tools/list", params, caller)
            page = result.get("tools")
            if isinstance(page, list):
                tools.extend(t for t in page if isinstance(t, dict))
            cursor = result.get("nextCursor")
            if not cursor:
                break
        return tools

    async def request(
        self, spec: ServerSpec, method: str, params: dict[str, Any] | None, caller: Caller
    ) -> dict[str, Any]:
        """One request to `spec` as this caller; upstream faults become `ToolError`s."""
        t0, error = now_ns(), ""
        try:
            return await self.upstreams.call(
                spec, method, params, caller.subject, caller.passthrough.get(spec.name)
            )
        except BaseException as e:
            error = _error_type(e)
            raise self._translate(spec, e) from None
        finally:
            if method != "tools/call":  # call_tool records those, refusals included
                run = ToolRun(
                    server=spec.name,
                    method=method,
                    tool="",
                    start_ns=t0,
                    end_ns=now_ns(),
                    error_type=error,
                    session_id=caller.session_id,
                )
                caller.runs.append(run)

    def _translate(self, spec: ServerSpec, e: BaseException) -> BaseException:
        if isinstance(e, Unavailable):
            self.count("llm_gateway_mcp_server_failures_total", (spec.name, e.reason))
            data = {"server": spec.name, "reason": e.reason}
            return ToolError(UNAVAILABLE, str(e), data)
        if isinstance(e, RpcError):
            return ToolError(e.code, e.message, e.data)
        return e

    def resolve(self, target: Target, name: str) -> tuple[ServerSpec, str]:
        """The server and upstream tool behind a tool name the client used."""
        if target.tools is not None:
            found = target.tools.get(name)
            if found is not None:
                spec = next(s for s in target.servers if s.name == found[0])
                return spec, found[1]
        elif target.servers[0].exposes(name):
            return target.servers[0], name
        raise ToolError(INVALID_PARAMS, f"Unknown tool '{name[:100]}' on '{target.name}'")

    async def call_tool(
        self,
        rt: Runtime,
        target: Target,
        name: str,
        arguments: dict[str, Any],
        caller: Caller,
    ) -> dict[str, Any]:
        """Calls one tool through the policy; returns the MCP `CallToolResult`."""
        spec, tool = self.resolve(target, name)
        started, t0 = perf_counter(), now_ns()
        error = "unknown"
        result: dict[str, Any] | None = None
        try:
            result = await self._call(rt, target, spec, tool, arguments, caller)
            error = "tool_error" if result.get("isError") else ""
            return result
        except BaseException as e:
            error = _error_type(e)
            raise
        finally:
            status = "error" if error else "success"
            self.count("llm_gateway_agent_tool_calls_total", (tool, spec.name, status))
            self.observe(
                "llm_gateway_agent_tool_latency_ms", (tool, spec.name), perf_counter() - started
            )
            capture = self.telemetry is not None and self.telemetry.capture_content
            caller.runs.append(
                ToolRun(
                    server=spec.name,
                    method="tools/call",
                    tool=tool,
                    start_ns=t0,
                    end_ns=now_ns(),
                    error_type=error,
                    session_id=caller.session_id,
                    arguments=_json(arguments) if capture else None,
                    result=_json(result) if capture and result is not None else None,
                )
            )

    async def _call(
        self,
        rt: Runtime,
        target: Target,
        spec: ServerSpec,
        tool: str,
        arguments: dict[str, Any],
        caller: Caller,
    ) -> dict[str, Any]:
        # `allowed_tools` and rate limits name the real `<server>/<tool>`, also through a
        # virtual server.
        adm = admit_tool(
            rt.engine,
            caller.key,
            spec.name,
            tool,
            caller.metadata_header,
            caller.guardrails_header,
        )
        if isinstance(adm, Denial):
            raise _refusal(adm, spec.name, tool)
        if adm.rate_limit_rule:
            self.count("llm_gateway_rate_limit_requests_total", (adm.rate_limit_rule, "allowed"))
        guard = tool_guard(rt.guardrails, rt.guard_infos, adm)
        try:
            if guard is not None and guard.pre:
                arguments = await guard.check("pre", spec.name, tool, arguments, self.session)
            params = {"name": tool, "arguments": arguments}
            result = await self.request(spec, "tools/call", params, caller)
            if guard is not None and guard.post:
                result = await guard.check("post", spec.name, tool, result, self.session)
        except Blocked as e:
            raise ToolError(
                GUARDRAIL_BLOCKED, str(e), {"guardrail": e.guardrail, "tool": f"{spec.name}/{tool}"}
            ) from None
        finally:
            if guard is not None:
                caller.guardrail_runs.extend(guard.runs)
        return result


def _refusal(d: Denial, server: str, tool: str) -> ToolError:
    name = f"{server}/{tool}"
    if d.status == 429:
        rule = d.rule_id or ""
        data = {"status": 429, "rule": rule, "tool": name, "type": d.code}
        message = f"Rate limit '{rule}' exceeded for the tool '{name}': {d.message}"
        return ToolError(RATE_LIMITED, message, data)
    code = FORBIDDEN if d.status in (401, 403) else INVALID_PARAMS
    return ToolError(code, d.message, {"status": d.status, "tool": name, "type": d.code})


def _error_type(e: BaseException) -> str:
    if isinstance(e, ToolError):
        return _ERROR_TYPES.get(e.code, f"rpc_{e.code}")
    if isinstance(e, Unavailable):
        return "unavailable"
    if isinstance(e, RpcError):
        return f"rpc_{e.code}"
    return type(e).__name__


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()
