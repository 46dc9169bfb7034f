"""The agent loop: `POST /v1/chat/completions` with `"mcp_servers": [{"name", "tools"?}]`.

The gateway offers those MCP tools to the model in OpenAI `tools` format (named
`<server>__<tool>`), runs each model call through the normal request path (admission,
routing, guardrails, settle, telemetry: one record per model call), executes the model's
tool calls through the MCP gateway with the same policy as `/mcp/...`, appends the results
and calls the model again, until it answers without tool calls or `max_iterations` model
calls (default 10) were made. A tool the gateway did not offer ends the loop: the answer
goes to the client, whose tool it is. Usage in the answer sums every model call.

Streaming (`stream: true`) sends each tool step as an SSE comment as it finishes
(`: tool <server>/<tool> ok 12.3ms`) and then the final answer as chat.completion.chunk
events; a failure after the first byte is an SSE error event, without `[DONE]`.
"""

from __future__ import annotations

import re
from time import perf_counter
from typing import Any, Protocol

import msgspec

from tollway.asgi import JSON, RequestHead, Send
from tollway.engine import Denial, Runtime
from tollway.errors import GatewayError
from tollway.mcp.agent_io import AgentResponse, Capture
from tollway.mcp.gateway import McpGateway, parse_mcp_headers
from tollway.mcp.registry import Target
from tollway.mcp.tools import Caller, ToolError
from tollway.telemetry import Record, Telemetry, now_ns
from tollway.upstream import UpstreamClient


class Proxy(Protocol):
    """What the loop uses of `tollway.proxy.handler.Proxy` (which calls it)."""

    runtime: Runtime
    client: UpstreamClient
    telemetry: Telemetry | None
    mcp: McpGateway | None


__all__ = ["DEFAULT_MAX_ITERATIONS", "run_agent"]

DEFAULT_MAX_ITERATIONS = 10
_MAX_ITERATIONS_CAP = 50
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _servers(req: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    raw = req.get("mcp_servers")
    if not isinstance(raw, list) or not raw:
        raise GatewayError.bad_request("'mcp_servers' must be a non-empty list", "mcp_servers")
    out = []
    for i, entry in enumerate(raw):
        name = entry.get("name") if isinstance(entry, dict) else None
        tools = entry.get("tools") if isinstance(entry, dict) else None
        ok_tools = tools is None or (
            isinstance(tools, list) and all(isinstance(t, str) for t in tools)
        )
        if not isinstance(name, str) or not ok_tools:
            raise GatewayError.bad_request(
                f'mcp_servers[{i}] must be {{"name": str, "tools": [str]}}', "mcp_servers"
            )
        out.append((name, tools))
    return out


def _max_iterations(req: dict[str, Any]) -> int:
    n = req.get("max_iterations", DEFAULT_MAX_ITERATIONS)
    if type(n) is not int or not 1 <= n <= _MAX_ITERATIONS_CAP:
        raise GatewayError.bad_request(
            f"'max_iterations' must be a whole number from 1 to {_MAX_ITERATIONS_CAP}",
            "max_iterations",
        )
    return n


def _result_text(result: dict[str, Any]) -> str:
    parts = []
    for c in result.get("content") or ():
        if isinstance(c, dict) and c.get("type") == "text":
            parts.append(str(c.get("text", "")))
        elif isinstance(c, dict):
            parts.append(_encode(c).decode())
    if not parts and result.get("structuredContent") is not None:
        parts.append(_encode(result["structuredContent"]).decode())
    text = "\n".join(parts)
    return f"Error: {text}" if result.get("isError") else text


async def run_agent(
    proxy: Proxy,
    req: dict[str, Any],
    head: RequestHead,
    headers: list[tuple[bytes, bytes]],
    send: Send,
    timeouts: tuple[float, float | None],
) -> None:
    started = perf_counter()
    rt = proxy.runtime
    mcp = proxy.mcp
    assert mcp is not None
    key = rt.engine.authenticate(head.authorization)
    if isinstance(key, Denial):
        raise GatewayError(key.status, key.message, key.error_type, key.code)
    servers = _servers(req)
    limit = _max_iterations(req)
    stream = req.get("stream") is True
    options = req.get("stream_options")
    wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    raw_mcp_headers = next((v for k, v in headers if k == b"x-tfy-mcp-headers"), None)
    passthrough = parse_mcp_headers(raw_mcp_headers)
    caller = Caller(key, rt.keys[key].subject, head.metadata, head.guardrails, passthrough)
    offered, tools = await _offer(proxy, rt, servers, caller)
    body = {
        k: v
        for k, v in req.items()
        if k not in ("mcp_servers", "max_iterations", "stream", "stream_options")
    }
    messages = list(req["messages"])
    client_tools = list(req.get("tools") or ())
    usage = [0, 0, 0]
    model_s = tool_ms = 0.0
    start_ns = now_ns()
    sse = AgentResponse(send, stream)
    model = str(req["model"])
    try:
        for iteration in range(1, limit + 1):
            call_req = {**body, "messages": messages, "tools": client_tools + tools}
            t0 = perf_counter()
            capture = await _model_call(proxy, call_req, head, timeouts)
            model_s += perf_counter() - t0
            mcp.tools.observe("llm_gateway_agent_llm_latency_ms", (model,), perf_counter() - t0)
            if capture.status != 200:
                await sse.fail_or_relay(capture)
                return
            answer = _decode(b"".join(capture.parts))
            u = answer.get("usage") or {}
            usage[0] += int(u.get("prompt_tokens") or 0)
            usage[1] += int(u.get("completion_tokens") or 0)
            message = answer["choices"][0]["message"]
            calls = message.get("tool_calls") or []
            if not calls or any(c.get("function", {}).get("name") not in offered for c in calls):
                break
            if iteration == limit:
                mcp.tools.count("llm_gateway_agent_request_iteration_limit_reached_total", (model,))
                answer["choices"][0] = {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": (
                            f"The agent stopped after max_iterations ({limit}) model calls "
                            "without a final answer."
                        ),
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "length",
                }
                break
            messages.append({k: v for k, v in message.items() if v is not None})
            for c in calls:
                target, tool = offered[c["function"]["name"]]
                text, ok, ms = await _run_tool(proxy, rt, target, tool, c, caller)
                tool_ms += ms
                messages.append({"role": "tool", "tool_call_id": c.get("id", ""), "content": text})
                await sse.comment(f"tool {target.name}/{tool} {'ok' if ok else 'error'} {ms:.1f}ms")
        answer["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": usage[0] + usage[1],
        }
        timing = f"model;dur={model_s * 1000:.2f}, tool;dur={tool_ms:.2f}"
        await sse.finish(answer, wants_usage, iteration, timing)
    finally:
        elapsed = perf_counter() - started
        mcp.tools.observe("llm_gateway_agent_request_duration_ms", (model,), elapsed)
        if proxy.telemetry is not None and caller.runs:
            # The tool steps as one record (its model calls have their own).
            k = rt.keys[key]
            proxy.telemetry.record(
                Record(
                    request_id=head.request_id.decode(),
                    start_ns=start_ns,
                    end_ns=now_ns(),
                    route="/v1/chat/completions",
                    key_name=k.name,
                    subject=k.subject,
                    model=model,
                    traceparent=head.traceparent.decode(errors="replace")
                    if head.traceparent
                    else "",
                    guardrails=caller.guardrail_runs,
                    tools=caller.runs,
                )
            )


async def _model_call(
    proxy: Proxy, req: dict[str, Any], head: RequestHead, timeouts: tuple[float, float | None]
) -> Capture:
    """One model call through the normal request path, its response kept, not sent."""
    from tollway.guardrails.request import plan_for
    from tollway.proxy.call import Call
    from tollway.telemetry.observe import RequestLog

    rt = proxy.runtime
    capture = Capture()
    log = RequestLog("/v1/chat/completions", now_ns())
    started = perf_counter()
    adm = rt.engine.admit(head.authorization, req["model"], head.metadata, head.guardrails)
    tel = proxy.telemetry
    capture_content = tel is not None and tel.capture_content
    try:
        if isinstance(adm, Denial):
            raise GatewayError.from_denial(adm)
        guard = None
        if rt.guardrails is not None:
            guard = plan_for(rt.guardrails, rt.guard_infos, adm, log.guardrails)
        raw = _encode(req)
        session = getattr(proxy.client, "session", None)
        call = Call(
            proxy.client,
            rt,
            "chat",
            req,
            raw,
            adm,
            head,
            capture,
            started,
            timeouts,
            log,
            guard,
            session,
            capture_content,
            adm.applied,
        )
        await call.run()
    except GatewayError as e:
        log.status, log.error_type = e.status, e.code or e.error_type
        capture.status = e.status
        capture.headers = [JSON, *e.headers]
        capture.parts = [e.body()]
    finally:
        if tel is not None:
            elapsed = perf_counter() - started
            tel.record_request(rt.engine, log, head.request_id, elapsed, req, adm, head.traceparent)
    return capture


async def _offer(
    proxy: Proxy, rt: Runtime, servers: list[tuple[str, list[str] | None]], caller: Caller
) -> tuple[dict[str, tuple[Target, str]], list[dict[str, Any]]]:
    """The MCP tools offered to the model: OpenAI function name -> (target, tool)."""
    mcp = proxy.mcp
    assert mcp is not None
    registry = mcp.registry(rt)
    offered: dict[str, tuple[Target, str]] = {}
    tools: list[dict[str, Any]] = []
    for i, (name, wanted) in enumerate(servers):
        target = registry.target(name) or registry.target(f"virtual/{name}")
        if target is None:
            raise GatewayError(
                404,
                f"Unknown MCP server '{name[:64]}'",
                "invalid_request_error",
                "mcp_server_not_found",
                f"mcp_servers[{i}].name",
            )
        t0 = perf_counter()
        try:
            listed = await mcp.tools.list_tools(rt, target, caller)
        except ToolError as e:
            raise GatewayError(502, e.message, "api_error", "mcp_server_unavailable") from None
        mcp.tools.observe("llm_gateway_agent_mcp_connect_latency_ms", (name,), perf_counter() - t0)
        by_name = {t["name"]: t for t in listed}
        for w in wanted or ():
            if w not in by_name:
                raise GatewayError(
                    403,
                    f"The tool '{name}/{w[:64]}' is not available to this key",
                    "permission_error",
                    "tool_not_allowed",
                    f"mcp_servers[{i}].tools",
                )
        for tool in listed:
            if wanted is not None and tool["name"] not in wanted:
                continue
            fname = _UNSAFE.sub("_", f"{target.name}__{tool['name']}")[:64]
            offered[fname] = (target, tool["name"])
            schema = tool.get("inputSchema") or {"type": "object", "properties": {}}
            fn = {
                "name": fname,
                "description": str(tool.get("description") or ""),
                "parameters": schema,
            }
            tools.append({"type": "function", "function": fn})
    return offered, tools


async def _run_tool(
    proxy: Proxy, rt: Runtime, target: Target, tool: str, call: dict[str, Any], caller: Caller
) -> tuple[str, bool, float]:
    """The tool's result as text for the model (a refusal or failure too), ok, latency."""
    t0 = perf_counter()
    assert proxy.mcp is not None
    try:
        args = _decode(call["function"].get("arguments") or "{}")
        if not isinstance(args, dict):
            raise ValueError
    except (msgspec.DecodeError, ValueError):
        return "Error: the arguments are not a JSON object", False, 0.0
    try:
        result = await proxy.mcp.tools.call_tool(rt, target, tool, args, caller)
        ok = not result.get("isError")
        text = _result_text(result)
    except ToolError as e:
        ok, text = False, f"Error: {e.message}"
    return text, ok, (perf_counter() - t0) * 1000
