"""MCP tool calls made through the gateway land in the request log like model calls: one row
per MCP request, its tool calls as attempts, read back through the analytics API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import CLIENT_KEY, Gateways, Server
from mcp import ClientSession
from test_mcp_e2e import ToolServer, _tool_server, mcp_run, text

pytestmark = pytest.mark.filterwarnings(
    "ignore:Use `streamable_http_client` instead:DeprecationWarning"
)
ADMIN_KEY = "admin-key-0123456789"


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolServer]:
    yield from _tool_server(tmp_path_factory.mktemp("mcp-log") / "calls.jsonl")


@pytest.fixture(scope="module")
def gw(
    tools: ToolServer, module_gateways: Gateways, tmp_path_factory: pytest.TempPathFactory
) -> Server:
    log = tmp_path_factory.mktemp("log") / "requests.duckdb"
    return module_gateways.start(f"""
type: gateway-settings
request_logs: {{path: {log}, flush_interval_ms: 100}}
---
type: mcp-server
name: tools
url: {tools.url}/mcp
tools: [get_weather, add]
---
type: gateway-keys
keys:
  - {{name: client, key: {CLIENT_KEY}, subject: "user:alice", allowed_tools: ["*/*"]}}
  - {{name: ops, key: {ADMIN_KEY}, subject: "user:ops", admin: true}}
""")  # fmt: skip


def rows(gw: Server, want: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    data: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(f"{gw.url}/v1/analytics/requests", params={"limit": "100"},
                      headers={"authorization": f"Bearer {ADMIN_KEY}"})  # fmt: skip
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        if len(data) >= want:
            break
        time.sleep(0.2)
    return data


def test_a_tool_call_is_logged_with_its_tool_as_the_attempt(gw: Server) -> None:
    async def go(s: ClientSession) -> Any:
        return await s.call_tool("get_weather", {"city": "Oslo"})

    assert text(mcp_run(f"{gw.url}/mcp/tools", CLIENT_KEY, go)) == "Sunny in Oslo"
    # Every MCP request to the server is a row (the session's initialize too); the call is one.
    logged = [r for r in rows(gw, 2) if r["route"] == "/mcp/tools"]
    calls = [r for r in logged if r["target"] == "tools/get_weather"]
    assert len(logged) >= 2 and len(calls) == 1, logged
    row = calls[0]
    assert row["key_name"] == "client" and row["subject"] == "user:alice"
    assert row["error_type"] == ""
    detail = httpx.get(f"{gw.url}/v1/analytics/requests/{row['request_id']}",
                       headers={"authorization": f"Bearer {ADMIN_KEY}"})  # fmt: skip
    assert detail.status_code == 200, detail.text
    attempts = detail.json()["attempts"]
    assert [(a["target"], a["method"]) for a in attempts] == [("tools/get_weather", "tools/call")]
