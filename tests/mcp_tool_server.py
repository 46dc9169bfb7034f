"""A FastMCP tool server (official `mcp` SDK, Streamable HTTP) for the MCP e2e tests.

`python tests/mcp_tool_server.py PORT LOG [TOKEN]`: tools `get_weather`, `add`, `whoami`,
`leak`, a resource `note://readme` and a prompt `review`. Every tool call appends a JSON line
to LOG (tool, arguments, the `x-tfy-user` and `authorization` headers it got). With TOKEN,
MCP requests need `Authorization: Bearer TOKEN`, and `POST /token` is an OAuth2
client-credentials endpoint (client `cid`, secret `csecret`) issuing TOKEN; each grant is
logged too.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import uvicorn
from mcp.server.fastmcp import Context, FastMCP
from starlette.requests import Request

PORT, LOG = int(sys.argv[1]), sys.argv[2]
TOKEN = sys.argv[3] if len(sys.argv) > 3 else None

server = FastMCP("test-tools", host="127.0.0.1", port=PORT)


def _log(entry: dict[str, Any]) -> None:
    with open(LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")


def _record(ctx: Context, tool: str, args: dict[str, Any]) -> None:  # type: ignore[type-arg]
    request: Request | None = ctx.request_context.request  # type: ignore[assignment]
    headers = request.headers if request is not None else {}
    _log(
        {
            "tool": tool,
            "args": args,
            "user": headers.get("x-tfy-user"),
            "auth": headers.get("authorization"),
        }
    )


@server.tool()
def get_weather(city: str, ctx: Context) -> str:  # type: ignore[type-arg]
    """The weather now in a city."""
    _record(ctx, "get_weather", {"city": city})
    return f"Sunny in {city}"


@server.tool()
def add(a: float, b: float, ctx: Context) -> str:  # type: ignore[type-arg]
    """Adds two numbers."""
    _record(ctx, "add", {"a": a, "b": b})
    return str(a + b)


@server.tool()
def whoami(ctx: Context) -> str:  # type: ignore[type-arg]
    """The caller the gateway says it is."""
    _record(ctx, "whoami", {})
    request: Request | None = ctx.request_context.request  # type: ignore[assignment]
    return str(request.headers.get("x-tfy-user") if request is not None else None)


@server.tool()
def leak(ctx: Context) -> str:  # type: ignore[type-arg]
    """Answers with an email address and a phone number."""
    _record(ctx, "leak", {})
    return "Write to jane.doe@example.com today"


@server.resource("note://readme", mime_type="text/plain")
def readme() -> str:
    """A note the server shares."""
    return "Read me first"


@server.prompt()
def review(topic: str) -> str:
    """A prompt template."""
    return f"Review {topic} carefully"


app = server.streamable_http_app()


async def guarded(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http" and TOKEN is not None:
        headers = dict(scope["headers"])
        if scope["path"] == "/token":
            body = b""
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if not msg.get("more_body"):
                    break
            form = dict(p.split("=", 1) for p in body.decode().split("&") if "=" in p)
            ok = form.get("client_id") == "cid" and form.get("client_secret") == "csecret"
            _log({"grant": form.get("grant_type"), "ok": ok})
            status, out = (200, {"access_token": TOKEN, "expires_in": 3600}) if ok else (401, {})
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": json.dumps(out).encode()})
            return
        if headers.get(b"authorization") != f"Bearer {TOKEN}".encode():
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
    await app(scope, receive, send)


if __name__ == "__main__":
    uvicorn.run(guarded, host="127.0.0.1", port=PORT, log_level="warning", lifespan="on")
