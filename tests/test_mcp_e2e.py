"""The MCP gateway end to end: the official `mcp` SDK as the client and as the tool servers
(FastMCP over Streamable HTTP on loopback), through `tollway serve`."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest
from conftest import (
    CLIENT_KEY,
    LIMITED_KEY,
    GatewayFactory,
    Gateways,
    Server,
    free_port,
    spawn,
    stop,
)
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError
from test_telemetry_e2e import Receiver, attrs

# The task's client is the SDK's `streamablehttp_client`, which mcp 1.30 deprecates by name.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Use `streamable_http_client` instead:DeprecationWarning"
)
T = TypeVar("T")
NO_TOOLS_KEY = "no-tools-key-0123456789"
TOKEN = "tok-secret-0123456789"
SERVER = Path(__file__).with_name("mcp_tool_server.py")


@dataclass
class ToolServer:
    url: str
    log: Path

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"tool server on {port} did not come up")


def _tool_server(log: Path, *token: str) -> Iterator[ToolServer]:
    port = free_port()
    proc = spawn([sys.executable, str(SERVER), str(port), str(log), *token])
    try:
        _wait_port(port)
        yield ToolServer(f"http://127.0.0.1:{port}", log)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolServer]:
    yield from _tool_server(tmp_path_factory.mktemp("mcp") / "calls.jsonl")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolServer]:
    yield from _tool_server(tmp_path_factory.mktemp("mcp") / "secured.jsonl", TOKEN)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    rx.thread.start()
    try:
        yield rx
    finally:
        rx.release.set()
        rx.server.shutdown()
        rx.server.server_close()


def config(mock: str, tools: ToolServer, secured: ToolServer, dead: str, otlp: str) -> str:
    return f"""
type: gateway-settings
otel:
  traces_endpoint: {otlp}
  exclude_request_data: false
  schedule_delay_ms: 50
---
type: provider-account
name: mock
provider: openai-compatible
base_url: {mock}/v1
models: [gpt-4o-mini]
---
type: mcp-server
name: tools
url: {tools.url}/mcp
description: Test tools
tools: [get_weather, add, whoami, leak]
---
type: mcp-server
name: passthru
url: {secured.url}/mcp
auth: {{type: passthrough}}
---
type: mcp-server
name: static
url: {secured.url}/mcp
auth:
  type: headers
  headers: {{Authorization: "Bearer ${{STATIC_MCP_TOKEN}}"}}
---
type: mcp-server
name: oauth
url: {secured.url}/mcp
auth:
  type: oauth2-client-credentials
  token_url: {secured.url}/token
  client_id: cid
  client_secret: csecret
---
type: mcp-server
name: dead
url: {dead}/mcp
timeouts: {{connect_ms: 500, request_ms: 2000}}
circuit_breaker: {{failure_threshold: 2, cooldown_ms: 60000}}
---
type: virtual-mcp-server
name: combo
tools: [tools/get_weather, oauth/add]
---
type: gateway-keys
keys:
  - {{name: client, key: {CLIENT_KEY}, subject: "user:alice", allowed_tools: ["*/*"]}}
  - {{name: weather, key: {LIMITED_KEY}, subject: "user:bob", allowed_tools: ["*/get_weather"]}}
  - {{name: none, key: {NO_TOOLS_KEY}, subject: "user:carol"}}
---
type: gateway-rate-limiting-config
rules:
  - id: add-per-user
    when: {{mcp_servers: [tools/add]}}
    limit_to: 2
    unit: requests_per_minute
    rate_limit_applies_per: [user]
---
type: gateway-guardrails-config
guardrails:
  - {{name: no-secrets, kind: secrets}}
  - {{name: redact-pii, kind: pii, operation: mutate}}
rules:
  - id: tool-guard
    when: {{mcp_servers: [tools]}}
    mcp_tool_pre_invoke_guardrails: [no-secrets]
    mcp_tool_post_invoke_guardrails: [redact-pii]
"""


@pytest.fixture(scope="module")
def gw(
    mock_upstream: Server,
    module_gateways: Gateways,
    tools: ToolServer,
    secured: ToolServer,
    receiver: Receiver,
) -> Server:
    dead = f"http://127.0.0.1:{free_port()}"
    otlp = f"{receiver.url}/mcp/v1/traces"
    env = {"STATIC_MCP_TOKEN": TOKEN}
    return module_gateways.start(config(mock_upstream.url, tools, secured, dead, otlp), env=env)


def mcp_run(
    url: str,
    key: str,
    fn: Callable[[ClientSession], Awaitable[T]],
    headers: dict[str, str] | None = None,
) -> T:
    async def go() -> T:
        sent = {"Authorization": f"Bearer {key}", **(headers or {})}
        async with (
            streamablehttp_client(url, headers=sent) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await fn(session)

    return asyncio.run(go())


def names(result: Any) -> list[str]:
    return sorted(t.name for t in result.tools)


def text(result: Any) -> str:
    return "".join(c.text for c in result.content if c.type == "text")


def test_list_and_call_through_a_server_with_the_callers_identity(
    gw: Server, tools: ToolServer
) -> None:
    async def go(s: ClientSession) -> tuple[Any, Any, Any]:
        return (
            await s.list_tools(),
            await s.call_tool("get_weather", {"city": "Paris"}),
            await s.call_tool("whoami", {}),
        )

    listed, weather, who = mcp_run(f"{gw.url}/mcp/tools", CLIENT_KEY, go)
    assert names(listed) == ["add", "get_weather", "leak", "whoami"]
    assert text(weather) == "Sunny in Paris"
    assert text(who) == "user:alice"
    assert tools.calls()[-1]["user"] == "user:alice"


def test_a_virtual_server_combines_tools_of_several_servers(gw: Server) -> None:
    async def go(s: ClientSession) -> tuple[Any, Any, Any]:
        return (
            await s.list_tools(),
            await s.call_tool("get_weather", {"city": "Oslo"}),
            await s.call_tool("add", {"a": 2, "b": 3}),
        )

    listed, weather, total = mcp_run(f"{gw.url}/mcp/virtual/combo", CLIENT_KEY, go)
    assert names(listed) == ["add", "get_weather"]
    assert text(weather) == "Sunny in Oslo"
    assert text(total) == "5.0"


def test_tools_are_filtered_per_key_and_refused_on_call(gw: Server, tools: ToolServer) -> None:
    async def go(s: ClientSession) -> tuple[Any, str]:
        listed = await s.list_tools()
        with pytest.raises(McpError) as refused:
            await s.call_tool("add", {"a": 1, "b": 1})
        return listed, str(refused.value)

    before = len(tools.calls())
    listed, refused = mcp_run(f"{gw.url}/mcp/tools", LIMITED_KEY, go)
    assert names(listed) == ["get_weather"]
    assert "may not call the tool 'tools/add'" in refused
    listed, refused = mcp_run(f"{gw.url}/mcp/tools", NO_TOOLS_KEY, go)
    assert names(listed) == []
    assert len(tools.calls()) == before, "a refused call never reaches the tool server"


def test_a_bad_key_is_401_and_an_unknown_server_404(gw: Server) -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    r = httpx.post(f"{gw.url}/mcp/tools", json=init, headers={"authorization": "Bearer nope"})
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "Invalid API key"
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    assert httpx.post(f"{gw.url}/mcp/nope", json=init, headers=auth).status_code == 404


def test_sse_answers_and_notifications_over_raw_http(gw: Server) -> None:
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-03-26",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    r = httpx.post(f"{gw.url}/mcp/tools", json=init, headers=auth)
    assert r.headers["mcp-session-id"]
    assert r.json()["result"]["protocolVersion"] == "2025-03-26"
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert httpx.post(f"{gw.url}/mcp/tools", json=note, headers=auth).status_code == 202
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "get_weather", "arguments": {"city": "Rome"}},
    }
    sse = {**auth, "accept": "text/event-stream"}
    r = httpx.post(f"{gw.url}/mcp/tools", json=call, headers=sse)
    assert r.headers["content-type"].startswith("text/event-stream")
    data = next(line[5:] for line in r.text.splitlines() if line.startswith("data:"))
    assert json.loads(data)["result"]["content"][0]["text"] == "Sunny in Rome"


def test_passthrough_sends_the_callers_own_credentials(gw: Server, secured: ToolServer) -> None:
    async def go(s: ClientSession) -> Any:
        return await s.call_tool("whoami", {})

    creds = {"x-tfy-mcp-headers": json.dumps({"passthru": {"Authorization": f"Bearer {TOKEN}"}})}
    result = mcp_run(f"{gw.url}/mcp/passthru", CLIENT_KEY, go, creds)
    assert text(result) == "user:alice"
    assert secured.calls()[-1]["auth"] == f"Bearer {TOKEN}"

    async def refused(s: ClientSession) -> str:
        with pytest.raises(McpError) as e:
            await s.call_tool("whoami", {})
        return str(e.value)

    wrong = {"x-tfy-mcp-headers": json.dumps({"passthru": {"Authorization": "Bearer wrong"}})}
    message = mcp_run(f"{gw.url}/mcp/passthru", CLIENT_KEY, refused, wrong)
    assert "refused the credentials (401)" in message
    assert "wrong" not in message


def test_static_header_auth_reads_its_secret_from_the_environment(
    gw: Server, secured: ToolServer
) -> None:
    async def go(s: ClientSession) -> Any:
        return await s.call_tool("whoami", {})

    creds = {"x-tfy-mcp-headers": json.dumps({"static": {"Authorization": "Bearer forged"}})}
    assert text(mcp_run(f"{gw.url}/mcp/static", CLIENT_KEY, go, creds)) == "user:alice"
    assert secured.calls()[-1]["auth"] == f"Bearer {TOKEN}", "passthrough headers are ignored"


def test_oauth2_client_credentials_token_is_fetched_once_and_used(
    gw: Server, secured: ToolServer
) -> None:
    async def go(s: ClientSession) -> list[Any]:
        return [await s.call_tool("add", {"a": 1, "b": i}) for i in range(3)]

    results = mcp_run(f"{gw.url}/mcp/oauth", CLIENT_KEY, go)
    assert [text(r) for r in results] == ["1.0", "2.0", "3.0"]
    grants = [c for c in secured.calls() if "grant" in c]
    assert grants and all(g == {"grant": "client_credentials", "ok": True} for g in grants)
    assert len(grants) == 1, "the token is cached"
    assert secured.calls()[-1]["auth"] == f"Bearer {TOKEN}"


def test_a_pre_tool_guardrail_blocks_before_the_server_is_called(
    gw: Server, tools: ToolServer
) -> None:
    async def go(s: ClientSession) -> str:
        with pytest.raises(McpError) as e:
            await s.call_tool("get_weather", {"city": "AKIAIOSFODNN7EXAMPLE"})
        return str(e.value)

    before = len(tools.calls())
    message = mcp_run(f"{gw.url}/mcp/tools", CLIENT_KEY, go)
    assert "Blocked by guardrail 'no-secrets' (AWS_ACCESS_KEY)" in message
    assert "AKIA" not in message
    assert len(tools.calls()) == before


def test_a_post_tool_guardrail_redacts_the_result(gw: Server) -> None:
    async def go(s: ClientSession) -> Any:
        return await s.call_tool("leak", {})

    out = text(mcp_run(f"{gw.url}/mcp/tools", CLIENT_KEY, go))
    assert "jane.doe@example.com" not in out
    assert out.startswith("Write to ") and out.endswith(" today")


def test_a_rate_limit_on_a_tool_names_its_rule(gw: Server, tools: ToolServer) -> None:
    async def go(s: ClientSession) -> tuple[list[str], str, Any]:
        ok = [text(await s.call_tool("add", {"a": 1, "b": 1})) for _ in range(2)]
        with pytest.raises(McpError) as e:
            await s.call_tool("add", {"a": 1, "b": 1})
        return ok, str(e.value), await s.call_tool("get_weather", {"city": "Lima"})

    ok, refused, other = mcp_run(f"{gw.url}/mcp/tools", CLIENT_KEY, go)
    assert ok == ["2.0", "2.0"]
    assert "Rate limit 'add-per-user' exceeded for the tool 'tools/add'" in refused
    assert text(other) == "Sunny in Lima", "other tools are not limited by that rule"


def test_a_dead_server_is_a_clear_error_and_opens_the_breaker(gw: Server) -> None:
    async def go(s: ClientSession) -> list[str]:
        out = []
        for _ in range(3):
            with pytest.raises(McpError) as e:
                await s.call_tool("anything", {})
            out.append(str(e.value))
        return out

    errors = mcp_run(f"{gw.url}/mcp/dead", CLIENT_KEY, go)
    assert "MCP server 'dead' is unavailable (connect)" in errors[0]
    assert errors[-1].endswith("(circuit open)")
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'llm_gateway_mcp_server_failures_total{reason="circuit open",server="dead"}' in metrics


def agent_body(**extra: Any) -> dict[str, Any]:
    return {"mcp_servers": [{"name": "tools", "tools": ["get_weather"]}], **extra}


def test_the_agent_loop_calls_the_tool_and_answers(gw: Server, tools: ToolServer) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    before = len(tools.calls())
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    answer = client.chat.completions.create(
        model="mock/gpt-4o-mini",
        messages=ask,
        extra_body=agent_body(),  # type: ignore[arg-type]
    )
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content
    assert not answer.choices[0].message.tool_calls
    calls = tools.calls()[before:]
    assert [(c["tool"], c["args"], c["user"]) for c in calls] == [
        ("get_weather", {"city": "Paris"}, "user:alice")
    ]
    assert answer.usage is not None
    # Two model calls: the usage is their sum (the mock counts 4 + words per message).
    single = client.chat.completions.create(model="mock/gpt-4o-mini", messages=ask)  # type: ignore[arg-type]
    assert single.usage is not None
    assert answer.usage.prompt_tokens > single.usage.prompt_tokens
    metrics = httpx.get(f"{gw.url}/metrics").text
    labels = 'server="tools",status="success",tool_name="get_weather"'
    assert f"llm_gateway_agent_tool_calls_total{{{labels}}}" in metrics


def test_the_agent_loop_streams_the_final_answer(gw: Server) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    stream = client.chat.completions.create(
        model="mock/gpt-4o-mini",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body=agent_body(),
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content.startswith("This is a deterministic answer")
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        json={
            "model": "mock/gpt-4o-mini",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            **agent_body(),
        },
    ) as r:
        raw = r.read().decode()
    assert ": tool tools/get_weather ok" in raw
    assert raw.endswith("data: [DONE]\n\n")


def test_the_agent_loop_stops_at_max_iterations(gw: Server) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    answer = client.chat.completions.create(
        model="mock/gpt-4o-mini",
        messages=[{"role": "user", "content": "Weather?"}],
        extra_body=agent_body(max_iterations=1),
    )
    assert answer.choices[0].finish_reason == "length"
    assert "max_iterations (1)" in (answer.choices[0].message.content or "")
    metrics = httpx.get(f"{gw.url}/metrics").text
    family = "llm_gateway_agent_request_iteration_limit_reached_total"
    assert f'{family}{{model_name="mock/gpt-4o-mini"}} 1.0' in metrics
    with pytest.raises(openai.BadRequestError, match="max_iterations"):
        client.chat.completions.create(
            model="mock/gpt-4o-mini",
            messages=[{"role": "user", "content": "Weather?"}],
            extra_body=agent_body(max_iterations=0),
        )


def test_each_tool_call_is_an_mcp_span_under_the_request(gw: Server, receiver: Receiver) -> None:
    async def go(s: ClientSession) -> Any:
        return await s.call_tool("get_weather", {"city": "Quito"})

    mcp_run(f"{gw.url}/mcp/tools", CLIENT_KEY, go)

    def find() -> tuple[Any, Any] | None:
        spans = [s for _, s in receiver.spans("/mcp/v1/traces")]
        for span in spans:
            a = attrs(span)
            if a.get("gen_ai.tool.call.arguments") == '{"city":"Quito"}':
                root = next(r for r in spans if r.span_id == span.parent_span_id)
                return span, root
        return None

    deadline = time.monotonic() + 10
    while (found := find()) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert found is not None
    span, root = found
    a = attrs(span)
    assert span.name == "tools/call get_weather"
    assert a["tfy.span_type"] == "MCP" and a["mcp.method.name"] == "tools/call"
    assert a["tollway.mcp.server"] == "tools" and a["tollway.mcp.error"] is False
    assert a["mcp.session.id"]
    assert root.name == "POST /mcp/tools" and attrs(root)["tollway.subject"] == "user:alice"


def test_resources_and_prompts_pass_through_a_single_server(gw: Server) -> None:
    async def go(s: ClientSession) -> tuple[Any, Any, Any, Any]:
        return (
            await s.list_resources(),
            await s.read_resource("note://readme"),  # type: ignore[arg-type]
            await s.list_prompts(),
            await s.get_prompt("review", {"topic": "the gateway"}),
        )

    resources, note, prompts, prompt = mcp_run(f"{gw.url}/mcp/tools", CLIENT_KEY, go)
    assert [str(r.uri) for r in resources.resources] == ["note://readme"]
    assert note.contents[0].text == "Read me first"
    assert [p.name for p in prompts.prompts] == ["review"]
    assert prompt.messages[0].content.text == "Review the gateway carefully"


def test_a_config_edit_changes_a_keys_tools_within_5s(
    start_gateway: GatewayFactory, mock_upstream: Server
) -> None:
    def config(allowed: str) -> str:
        return f"""
type: mcp-server
name: demo
url: {mock_upstream.url}/mcp
---
type: gateway-keys
keys: [{{name: k, key: {CLIENT_KEY}, subject: "user:alice", allowed_tools: [{allowed}]}}]
"""

    gw = start_gateway(config('"demo/add"'))
    path = Path(gw.proc.args[3])  # type: ignore[index]
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}

    def tools() -> list[str]:
        r = httpx.post(f"{gw.url}/mcp/demo", json=listing, headers=auth)
        return sorted(t["name"] for t in r.json()["result"]["tools"])

    assert tools() == ["add"]
    path.write_text(config('"demo/*"'))
    deadline = time.monotonic() + 5
    while tools() != ["add", "get_weather"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tools() == ["add", "get_weather"]
