"""A tiny MCP server in the mock (`POST /mcp`, Streamable HTTP, JSON answers), so the demo
and the load tests have a tool server with no other process: `get_weather(city)` and
`add(a, b)`. Sessions are handed out and not checked; every call is in `/_mock/requests`."""

from __future__ import annotations

import os
from typing import Any

import msgspec

from tollway.mock.exchange import Call
from tollway.mock.state import MockState

__all__ = ["TOOLS", "mcp"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_JSON = (b"content-type", b"application/json")

TOOLS: list[dict[str, Any]] = [
    {
        "name": "get_weather",
        "description": "The weather now in a city",
        "inputSchema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
    {
        "name": "add",
        "description": "Adds two numbers",
        "inputSchema": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
    },
]


def _run(name: str, args: dict[str, Any]) -> dict[str, Any] | None:
    if name == "get_weather":
        text = f"Sunny and 21 C in {args.get('city', 'nowhere')}"
    elif name == "add":
        try:
            text = str(float(args.get("a", 0)) + float(args.get("b", 0))).removesuffix(".0")
        except (TypeError, ValueError):
            text, error = "a and b must be numbers", True
            return {"content": [{"type": "text", "text": text}], "isError": error}
    else:
        return None
    return {"content": [{"type": "text", "text": text}], "isError": False}


def _answer(msg: dict[str, Any]) -> dict[str, Any]:
    rid, method = msg.get("id"), msg.get("method")
    raw = msg.get("params")
    params: dict[str, Any] = raw if isinstance(raw, dict) else {}
    result: dict[str, Any] | None
    if method == "initialize":
        result = {
            "protocolVersion": params.get("protocolVersion") or "2025-06-18",
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "tollway-mock", "version": "0.1"},
        }
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        args = params.get("arguments")
        result = _run(str(params.get("name")), args if isinstance(args, dict) else {})
        if result is None:
            error = {"code": -32602, "message": f"Unknown tool: {params.get('name')}"}
            return {"jsonrpc": "2.0", "id": rid, "error": error}
    else:
        error = {"code": -32601, "message": "Method not found"}
        return {"jsonrpc": "2.0", "id": rid, "error": error}
    return {"jsonrpc": "2.0", "id": rid, "result": result}


async def mcp(state: MockState, call: Call, body: bytes) -> None:
    try:
        msg = _decode(body)
    except msgspec.DecodeError:
        err = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
        await call.respond(400, _encode(err))
        return
    if not isinstance(msg, dict) or "id" not in msg:
        await call.respond(202, b"", ())
        return
    headers: tuple[tuple[bytes, bytes], ...] = (_JSON,)
    if msg.get("method") == "initialize":
        headers = (_JSON, (b"mcp-session-id", os.urandom(8).hex().encode()))
    await call.respond(200, _encode(_answer(msg)), headers)
