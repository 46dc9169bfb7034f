"""The mock upstream as a real Granian process, driven by the real openai and anthropic clients."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import msgspec
import openai
import pytest

from tollway.mock.serve import (
    MockSettings,
    create_app,
    parse_settings,
    settings_from_env,
    settings_to_env,
)

PYTHON_DIR = Path(__file__).resolve().parent.parent / "python"
TOKENS = 16
TEXT = (
    "This is a deterministic answer from the Tollway mock. This is a deterministic answer from the"
)
MESSAGES: list[Any] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "say something nice"},
]
PROMPT_TOKENS = (2 + 4) + (3 + 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def mock_url() -> Iterator[str]:
    port = _free_port()
    env = dict(os.environ)
    # The package may not be installed while it is being built.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PYTHON_DIR), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway.mock", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "mock upstream exited"
            assert time.monotonic() < deadline, "mock upstream did not start"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def oai(mock_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{mock_url}/v1", api_key="sk-test", max_retries=0)


@pytest.fixture(scope="module")
def claude(mock_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=mock_url, api_key="sk-ant-test", max_retries=0)


def recorded(mock_url: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = httpx.get(f"{mock_url}/_mock/requests").json()
    return got


# --- OpenAI ---------------------------------------------------------------------------------


def test_chat_non_stream(oai: openai.OpenAI) -> None:
    got = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert got.id.startswith("chatcmpl-")
    assert got.object == "chat.completion"
    assert got.model == "gpt-4o-mini"
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == TEXT
    assert got.choices[0].finish_reason == "stop"
    assert got.usage is not None
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (PROMPT_TOKENS, TOKENS)
    assert got.usage.total_tokens == PROMPT_TOKENS + TOKENS


def test_chat_max_tokens_cuts_with_length(oai: openai.OpenAI) -> None:
    got = oai.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5)
    assert got.choices[0].message.content == "This is a deterministic answer"
    assert got.choices[0].finish_reason == "length"
    assert got.usage is not None and got.usage.completion_tokens == 5
    got = oai.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=2)
    assert got.choices[0].message.content == "This is"


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream_matches_non_stream(oai: openai.OpenAI, include_usage: bool) -> None:
    extra: Any = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, **extra)
    )
    assert {c.model for c in chunks} == {"gpt-4o"}
    assert len({c.id for c in chunks}) == 1
    first, *rest = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    content = [c for c in rest if c.choices and c.choices[0].delta.content]
    assert len(content) == TOKENS  # one chunk per token
    assert "".join(c.choices[0].delta.content or "" for c in content) == TEXT
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["stop"]
    usage = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert chunks[-1] is usage[0] and chunks[-1].choices == []
        assert usage[0].usage is not None
        assert usage[0].usage.prompt_tokens == PROMPT_TOKENS
        assert usage[0].usage.completion_tokens == TOKENS
    else:
        assert usage == []


def test_chat_stream_wire_format(mock_url: str) -> None:
    body = {"model": "x", "messages": MESSAGES, "stream": True, "max_tokens": 3}
    with httpx.stream("POST", f"{mock_url}/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"] == "text/event-stream"
        raw = r.read()
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    assert len(events) == 1 + 3 + 1 + 2  # role, 3 tokens, finish, [DONE], trailing ""
    last = msgspec.json.decode(events[-3].removeprefix(b"data: "))
    assert last["choices"][0]["finish_reason"] == "length"


def test_embeddings_base64_and_float(oai: openai.OpenAI) -> None:
    # The client asks for base64 by default and decodes it itself.
    b64 = oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    floats = oai.embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float"
    )
    assert [d.index for d in b64.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in b64.data)
    assert [d.embedding for d in b64.data] == [d.embedding for d in floats.data]
    assert b64.data[0].embedding != b64.data[1].embedding
    assert abs(sum(v * v for v in b64.data[0].embedding) - 1.0) < 1e-5
    assert b64.model == "text-embedding-3-small"
    assert (b64.usage.prompt_tokens, b64.usage.total_tokens) == (2, 2)
    again = oai.embeddings.create(model="e", input="alpha", dimensions=16)
    assert len(again.data) == 1 and len(again.data[0].embedding) == 16


def test_embeddings_raw_base64_is_float32_le(mock_url: str) -> None:
    body = {"model": "e", "input": [[1, 2, 3]], "encoding_format": "base64", "dimensions": 4}
    got = httpx.post(f"{mock_url}/v1/embeddings", json=body).json()
    raw = base64.b64decode(got["data"][0]["embedding"])
    assert len(struct.unpack("<4f", raw)) == 4
    assert got["usage"]["prompt_tokens"] == 3
    bad = httpx.post(f"{mock_url}/v1/embeddings", json={"model": "e", "input": [1.5]})
    assert bad.status_code == 400


def test_models(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert "gpt-4o-mini" in ids and "text-embedding-3-small" in ids


# --- Anthropic ------------------------------------------------------------------------------


def test_messages_non_stream(claude: anthropic.Anthropic) -> None:
    got = claude.messages.create(
        model="claude-mock-large",
        max_tokens=1024,
        system="be brief",
        messages=[{"role": "user", "content": "say something nice"}],
    )
    assert got.type == "message" and got.role == "assistant"
    assert got.model == "claude-mock-large"
    assert got.content[0].type == "text" and got.content[0].text == TEXT
    assert got.stop_reason == "end_turn" and got.stop_sequence is None
    assert (got.usage.input_tokens, got.usage.output_tokens) == (2 + 3 + 4, TOKENS)
    short = claude.messages.create(
        model="c", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
    )
    assert short.stop_reason == "max_tokens"
    assert short.content[0].type == "text" and short.content[0].text == "This is a"


def test_messages_stream(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="claude-mock-small",
        max_tokens=1024,
        messages=[{"role": "user", "content": [{"type": "text", "text": "one two"}]}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == TEXT
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2 + 4, TOKENS)


def test_messages_stream_event_order(mock_url: str) -> None:
    body = {"model": "c", "max_tokens": 2, "stream": True, "messages": []}
    raw = httpx.post(f"{mock_url}/v1/messages", json=body).content
    names = [line[7:] for line in raw.split(b"\n") if line.startswith(b"event: ")]
    assert names == [
        b"message_start",
        b"content_block_start",
        b"ping",
        b"content_block_delta",
        b"content_block_delta",
        b"content_block_stop",
        b"message_delta",
        b"message_stop",
    ]


# --- Tool calls ----------------------------------------------------------------------------

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
OPENAI_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": WEATHER}},
]
ANTHROPIC_TOOLS: list[Any] = [
    {"name": "get_weather", "input_schema": WEATHER},
    {"name": "get_time", "input_schema": WEATHER},
]
ASK: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
TOOL_USE = {
    "type": "tool_use",
    "id": "toolu_mock_1",
    "name": "get_weather",
    "input": {"city": "Paris"},
}


def test_chat_tools_get_one_call_to_the_first_tool(oai: openai.OpenAI) -> None:
    got = oai.chat.completions.create(model="m", messages=ASK, tools=OPENAI_TOOLS)
    choice = got.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (tool_call,) = choice.message.tool_calls or []
    assert tool_call.id == "call_mock_1" and tool_call.type == "function"
    assert tool_call.function.name == "get_weather"
    assert msgspec.json.decode(tool_call.function.arguments) == {"city": "Paris"}
    assert got.usage is not None and got.usage.completion_tokens > 0

    chunks = list(
        oai.chat.completions.create(
            model="m",
            messages=ASK,
            tools=OPENAI_TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    first, *fragments = deltas
    assert (first.index, first.id, first.type) == (0, "call_mock_1", "function")
    assert first.function is not None and first.function.name == "get_weather"
    assert 2 <= len(fragments) <= 3 and {d.index for d in fragments} == {0}
    arguments = "".join(d.function.arguments or "" for d in fragments if d.function)
    assert msgspec.json.decode(arguments) == {"city": "Paris"}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert [f for f in finishes if f] == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage == got.usage


@pytest.mark.parametrize("stream", [False, True])
def test_chat_answers_a_tool_result_with_text(oai: openai.OpenAI, stream: bool) -> None:
    function = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    follow_up: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_mock_1", "type": "function", "function": function}],
        },
        {"role": "tool", "tool_call_id": "call_mock_1", "content": "sunny"},
    ]
    if not stream:
        got = oai.chat.completions.create(model="m", messages=follow_up, tools=OPENAI_TOOLS)
        assert got.choices[0].message.content == TEXT
        assert got.choices[0].finish_reason == "stop" and not got.choices[0].message.tool_calls
        return
    chunks = list(
        oai.chat.completions.create(model="m", messages=follow_up, tools=OPENAI_TOOLS, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == TEXT
    assert not any(c.choices[0].delta.tool_calls for c in chunks)


def test_messages_tools_get_one_call_to_the_first_tool(claude: anthropic.Anthropic) -> None:
    got = claude.messages.create(model="c", max_tokens=100, messages=ASK, tools=ANTHROPIC_TOOLS)
    assert got.stop_reason == "tool_use"
    (block,) = got.content
    assert block.type == "tool_use" and block.id == "toolu_mock_1"
    assert block.name == "get_weather" and block.input == {"city": "Paris"}
    with claude.messages.stream(
        model="c", max_tokens=100, messages=ASK, tools=ANTHROPIC_TOOLS
    ) as stream:
        partial = [
            e.delta.partial_json
            for e in stream
            if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
        ]
        final = stream.get_final_message()
    assert 2 <= len(partial) <= 3
    assert final.content == got.content and final.stop_reason == "tool_use"
    assert final.usage.output_tokens == got.usage.output_tokens


def test_messages_tool_use_wire_events(mock_url: str) -> None:
    body = {
        "model": "c",
        "max_tokens": 9,
        "stream": True,
        "messages": ASK,
        "tools": ANTHROPIC_TOOLS,
    }
    raw = httpx.post(f"{mock_url}/v1/messages", json=body).content
    events = [
        msgspec.json.decode(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")
    ]
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[1]["content_block"] == {**TOOL_USE, "input": {}}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"]["output_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True])
def test_messages_answer_a_tool_result_with_text(claude: anthropic.Anthropic, stream: bool) -> None:
    follow_up: list[Any] = [
        *ASK,
        {"role": "assistant", "content": [TOOL_USE]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_mock_1", "content": "sunny"}],
        },
    ]
    got: anthropic.types.Message
    if stream:
        with claude.messages.stream(
            model="c", max_tokens=100, messages=follow_up, tools=ANTHROPIC_TOOLS
        ) as s:
            got = s.get_final_message()
    else:
        got = claude.messages.create(
            model="c", max_tokens=100, messages=follow_up, tools=ANTHROPIC_TOOLS
        )
    assert got.stop_reason == "end_turn"
    (block,) = got.content
    assert block.type == "text" and block.text == TEXT


# --- Faults and the control endpoints -------------------------------------------------------


def test_status_faults_openai(oai: openai.OpenAI, mock_url: str) -> None:
    with pytest.raises(openai.InternalServerError) as e503:
        oai.chat.completions.create(model="mock-status-503", messages=MESSAGES)
    assert e503.value.status_code == 503
    with pytest.raises(openai.RateLimitError) as e429:
        oai.chat.completions.create(model="mock-status-429", messages=MESSAGES, stream=True)
    assert e429.value.response.headers["retry-after"] == "1"
    r = httpx.post(f"{mock_url}/v1/embeddings", json={"model": "mock-status-401", "input": "a"})
    assert r.status_code == 401
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_status_faults_anthropic(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as e:
        claude.messages.create(model="mock-status-429", max_tokens=5, messages=[])
    assert e.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "mock: injected status 429"},
    }
    with pytest.raises(anthropic.InternalServerError):
        claude.messages.create(model="mock-status-529", max_tokens=5, messages=[])


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
@pytest.mark.parametrize("stream", [False, True])
def test_reset_before_closes_without_response(mock_url: str, path: str, stream: bool) -> None:
    body = {"model": "mock-reset-before", "messages": [], "stream": stream, "max_tokens": 5}
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        httpx.post(f"{mock_url}{path}", json=body)


def test_reset_before_seen_by_openai_client(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="mock-reset-before", messages=MESSAGES)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_reset_mid_stream(mock_url: str, path: str) -> None:
    body = {"model": "mock-reset-mid", "messages": [], "stream": True, "max_tokens": 100}
    lines: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"),
        httpx.stream("POST", f"{mock_url}{path}", json=body) as r,
    ):
        assert r.status_code == 200
        lines.extend(r.iter_lines())
    data = [line for line in lines if line.startswith("data: ")]
    assert len(data) >= 2
    assert "data: [DONE]" not in lines and "event: message_stop" not in lines


def test_reset_mid_non_stream(mock_url: str) -> None:
    body = {"model": "mock-reset-mid", "messages": []}
    with pytest.raises(httpx.RemoteProtocolError, match="without sending complete message body"):
        httpx.post(f"{mock_url}/v1/chat/completions", json=body)


def test_truncated_stream(mock_url: str, oai: openai.OpenAI) -> None:
    body = {"model": "mock-truncated", "messages": [], "stream": True}
    r = httpx.post(f"{mock_url}/v1/chat/completions", json=body)
    assert r.status_code == 200
    data = [e for e in r.content.split(b"\n\n") if e]
    assert data[-1] != b"data: [DONE]"
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(data[-1].removeprefix(b"data: "))
    msgspec.json.decode(data[-2].removeprefix(b"data: "))
    # Non-stream: a complete 200 whose JSON is cut; the client's JSON parser fails.
    with pytest.raises(ValueError, match="Unterminated string"):
        oai.chat.completions.create(model="mock-truncated", messages=MESSAGES)


@pytest.mark.parametrize("stream", [False, True])
def test_hang_stops_when_client_leaves(mock_url: str, stream: bool) -> None:
    httpx.delete(f"{mock_url}/_mock/requests")
    body = {"model": "mock-hang", "messages": [], "stream": stream}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{mock_url}/v1/chat/completions", json=body, timeout=0.3)
    deadline = time.monotonic() + 3
    while True:
        (rec,) = recorded(mock_url)
        if rec["disconnected"]:
            break
        assert time.monotonic() < deadline, rec
        time.sleep(0.02)
    assert rec["status"] is None and rec["body"]["model"] == "mock-hang"


def test_slow_delays_first_byte(mock_url: str) -> None:
    start = time.monotonic()
    r = httpx.post(
        f"{mock_url}/v1/chat/completions", json={"model": "mock-slow-300", "messages": []}
    )
    assert time.monotonic() - start >= 0.29
    assert r.json()["choices"][0]["message"]["content"] == TEXT


def test_recorded_requests(mock_url: str, oai: openai.OpenAI) -> None:
    assert httpx.delete(f"{mock_url}/_mock/requests").status_code == 200
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    httpx.post(f"{mock_url}/v1/chat/completions", content=b"not json{")
    (chat, bad) = recorded(mock_url)
    assert chat["method"] == "POST" and chat["path"] == "/v1/chat/completions"
    assert chat["headers"]["authorization"] == "Bearer sk-test"
    assert all(name == name.lower() for name in chat["headers"])
    assert chat["body"] == {"model": "gpt-4o-mini", "messages": MESSAGES}
    assert (chat["status"], chat["disconnected"]) == (200, False)
    assert bad["body"] is None and bad["status"] == 400
    httpx.delete(f"{mock_url}/_mock/requests")
    assert recorded(mock_url) == []


def test_errors_and_health(mock_url: str) -> None:
    assert httpx.get(f"{mock_url}/healthz").status_code == 200
    r = httpx.get(f"{mock_url}/v1/nope")
    assert r.status_code == 404
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(f"{mock_url}/v1/chat/completions", content=b"{")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{mock_url}/v1/messages", content=b"{")
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert httpx.get(f"{mock_url}/v1/chat/completions").status_code == 405


# --- In-process: create_app with settings the shared process does not use -------------------


async def _drive(
    settings: MockSettings, body: dict[str, Any], disconnect_after: float | None = None
) -> tuple[list[dict[str, Any]], Any]:
    """Runs one request through `create_app(settings)`; returns sent messages and the app."""
    app: Any = create_app(settings)
    sent: list[dict[str, Any]] = []
    payload = msgspec.json.encode(body)
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": payload, "more_body": False}
        await asyncio.sleep(3600 if disconnect_after is None else disconnect_after)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    await asyncio.wait_for(app(scope, receive, send), 5)
    return sent, app


def test_stream_stops_on_client_disconnect() -> None:
    settings = MockSettings(tokens=200, itl_ms=10)
    body = {"model": "m", "messages": [], "stream": True}
    sent, app = asyncio.run(_drive(settings, body, disconnect_after=0.1))
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert 2 <= len(bodies) < 100
    assert all(m["more_body"] for m in bodies)  # never ended, never reached [DONE]
    (rec,) = app.state.requests
    assert rec.to_json()["disconnected"] is True


def test_stream_itl_and_latency() -> None:
    settings = MockSettings(tokens=5, itl_ms=20, latency_ms=50)
    start = time.monotonic()
    sent, _ = asyncio.run(_drive(settings, {"model": "m", "messages": [], "stream": True}))
    assert time.monotonic() - start >= 0.05 + 4 * 0.02 - 0.01
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert sent[-2]["body"] == b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (MockSettings(fail_status=503, fail_first=2), [503, 503, 200, 200, 200]),
        (MockSettings(fail_status=500, fail_rate=0.5), [200, 500, 200, 500, 200]),
        (MockSettings(fail_status=429), [429, 429, 429, 429, 429]),
    ],
)
def test_cli_failures(settings: MockSettings, expected: list[int]) -> None:
    async def run() -> list[int]:
        app: Any = create_app(settings)
        statuses = []
        for _ in expected:
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b'{"model":"m"}', "more_body": False}

            async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
                sent.append(message)

            scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
                     "headers": []}  # fmt: skip
            await app(scope, receive, send)
            statuses.append(sent[0]["status"])
        return statuses

    assert asyncio.run(run()) == expected


def test_cli_parsing_and_env_round_trip() -> None:
    s = parse_settings(["--port", "1234", "--tokens", "3", "--fail-status", "503"])
    assert (s.port, s.tokens, s.fail_status, s.fail_rate, s.fail_first) == (1234, 3, 503, 1.0, None)
    assert settings_from_env({"TOLLWAY_MOCK_SETTINGS": settings_to_env(s)}) == s
    assert settings_from_env({}) == MockSettings()
    with pytest.raises(SystemExit):
        parse_settings(["--fail-first", "2"])
    with pytest.raises(SystemExit):
        parse_settings(["--fail-status", "503", "--fail-rate", "2"])
