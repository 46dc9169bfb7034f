"""Hostile clients against a real `tollway serve`: every bad input is a clear 4xx naming
what is wrong, nothing malformed reaches the provider, and no shape costs a worker.

Raw sockets where a client library would fix the shape (invalid UTF-8, huge heads, stalls).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import openai
import pytest
from conftest import CLIENT_KEY, Gateways, Server, gateway_config
from rawhttp import connect, post, read_response, request

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hello"}]
# Short, so the stalled-body test is quick; the default is 30 s.
BODY_READ_MS = 800


@pytest.fixture(scope="module")
def gateway(mock_upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = gateway_config(mock_upstream.url).replace(
        "timeouts: {connect_ms: 2000, request_ms: 10000}",
        f"timeouts: {{connect_ms: 2000, request_ms: 10000, body_read_ms: {BODY_READ_MS}}}",
    )
    gateways = Gateways(tmp_path_factory.mktemp("hostile"))
    try:
        yield gateways.start(config)
    finally:
        gateways.close()


def recorded(mock: Server) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = httpx.get(f"{mock.url}/_mock/requests").json()
    return out


def assert_error(status: int, body: dict[str, Any], expected: int, param: str | None) -> None:
    assert status == expected, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


def chat(gateway: Server, body: Any) -> httpx.Response:
    return httpx.post(f"{gateway.url}{CHAT}", json=body, headers=AUTH, timeout=10)


def still_serves(gateway: Server) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    out = client.chat.completions.create(model="mock/gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert out.choices[0].message.content


@pytest.mark.parametrize("shape", ["array", "object"])
def test_json_nested_ten_thousand_deep_is_a_400(gateway: Server, shape: str) -> None:
    n = 10_000
    inner = b"[" * n + b"]" * n if shape == "array" else b'{"a":' * n + b"1" + b"}" * n
    body = b'{"model":"mock/gpt-4o","messages":[{"role":"user","content":"x"}],"x":' + inner
    resp = post(gateway.url, CHAT, body + b"}", AUTH)
    assert_error(resp.status, resp.json(), 400, None)
    assert "nested" in str(resp.json()["error"]).lower()
    still_serves(gateway)


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"mock/gpt-4o","messages":[{"role":"user","content":"hi"}],"k\xff":1}',
        b'{"model":"mock/gpt-4o","messages":[{"role":"user","content":"h\xc3\x28i"}]}',
    ],
    ids=["key", "value"],
)
def test_invalid_utf8_is_a_400(gateway: Server, body: bytes) -> None:
    resp = post(gateway.url, CHAT, body, AUTH)
    assert_error(resp.status, resp.json(), 400, None)
    assert "UTF-8" in resp.json()["error"]["message"]


@pytest.mark.parametrize("options", ["yes", 5, [1], True])
def test_stream_options_that_is_not_an_object_is_a_400(gateway: Server, options: Any) -> None:
    resp = chat(
        gateway,
        {"model": "mock/gpt-4o", "messages": MESSAGES, "stream": True, "stream_options": options},
    )
    assert_error(resp.status_code, resp.json(), 400, "stream_options")


def test_stream_options_without_stream_is_a_400(gateway: Server) -> None:
    for stream in ({}, {"stream": False}):
        body = {
            "model": "mock/gpt-4o",
            "messages": MESSAGES,
            **stream,
            "stream_options": {"include_usage": True},
        }
        resp = chat(gateway, body)
        assert_error(resp.status_code, resp.json(), 400, "stream_options")
    resp = chat(
        gateway,
        {
            "model": "mock/gpt-4o",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": "yes"},
        },
    )
    assert_error(resp.status_code, resp.json(), 400, "stream_options.include_usage")


def test_messages_that_are_not_objects_never_reach_the_provider(
    gateway: Server, mock_upstream: Server
) -> None:
    before = len(recorded(mock_upstream))
    httpx.delete(f"{mock_upstream.url}/_mock/requests")
    cases: list[tuple[list[Any], str]] = [
        ([5, "hi", None], "messages[0]"),
        ([{"role": "user", "content": "ok"}, "hi"], "messages[1]"),
        ([{"role": "user", "content": "ok"}, None], "messages[1]"),
        ([{"content": "no role"}], "messages[0].role"),
        ([{"role": 7, "content": "x"}], "messages[0].role"),
    ]
    for messages, param in cases:
        resp = chat(gateway, {"model": "mock/gpt-4o", "messages": messages})
        assert_error(resp.status_code, resp.json(), 400, param)
    assert recorded(mock_upstream) == [], before


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"extra_body": {"api_base": "http://169.254.169.254"}}, "extra_body.api_base"),
        ({"extra_body": {"base_url": "http://evil.example"}}, "extra_body.base_url"),
        ({"extra_body": {"vertex_project": "theirs"}}, "extra_body.vertex_project"),
        ({"aws_bedrock_runtime_endpoint": "http://evil.example"}, "aws_bedrock_runtime_endpoint"),
        ({"extra_body": {"nested": [{"url": "http://evil.example"}]}}, "extra_body.nested[0].url"),
        ({"litellm_params": {"deep": {"api_base": "http://x"}}}, "litellm_params.deep.api_base"),
        (
            {"tools": [{"type": "function", "base_url": "http://x", "function": {"name": "f"}}]},
            "tools[0].base_url",
        ),
    ],
)
def test_upstream_choosing_fields_below_the_top_level_are_refused(
    gateway: Server, mock_upstream: Server, extra: dict[str, Any], param: str
) -> None:
    httpx.delete(f"{mock_upstream.url}/_mock/requests")
    resp = chat(gateway, {"model": "mock/gpt-4o", "messages": MESSAGES, **extra})
    assert_error(resp.status_code, resp.json(), 400, param)
    assert recorded(mock_upstream) == []


def test_schemas_with_such_property_names_pass_untouched(
    gateway: Server, mock_upstream: Server
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "base_url": {"type": "string"},
            "api_key": {"type": "string"},
            "headers": {"type": "object", "properties": {"url": {"type": "string"}}},
        },
        "required": ["base_url"],
    }
    tools = [{"type": "function", "function": {"name": "fetch", "parameters": schema}}]
    response_format = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    httpx.delete(f"{mock_upstream.url}/_mock/requests")
    client.chat.completions.create(
        model="mock/gpt-4o",
        messages=MESSAGES,  # type: ignore[arg-type]
        tools=tools,  # type: ignore[arg-type]
        response_format=response_format,  # type: ignore[arg-type]
    )
    sent = recorded(mock_upstream)[-1]["body"]
    assert sent["tools"] == tools
    assert sent["response_format"] == response_format


def test_client_data_named_like_an_option_passes(gateway: Server, mock_upstream: Server) -> None:
    # OpenAI's `metadata` is the client's own strings; message content is text.
    metadata = {"url": "https://app.example/page", "headers": "none"}
    messages = [{"role": "user", "content": '{"api_base": "http://x"}', "name": "base_url"}]
    httpx.delete(f"{mock_upstream.url}/_mock/requests")
    resp = chat(gateway, {"model": "mock/gpt-4o", "messages": messages, "metadata": metadata})
    assert resp.status_code == 200, resp.text
    sent = recorded(mock_upstream)[-1]["body"]
    assert sent["metadata"] == metadata
    assert sent["messages"] == messages


def test_a_header_block_past_64_kb_is_a_431(gateway: Server) -> None:
    host = gateway.url.removeprefix("http://")

    def get(padding: int) -> int:
        head = f"GET /healthz HTTP/1.1\r\nhost: {host}\r\n"
        filler = "".join(f"x-pad-{i}: {'a' * 1000}\r\n" for i in range(padding))
        raw = (head + filler + "connection: close\r\n\r\n").encode()
        try:
            return request(gateway.url, raw).status
        except (ConnectionError, OSError):
            return 0  # a server may also close without an answer; never a 200

    assert get(50) == 200  # ~50 KB: within the limit
    assert get(100) == 431  # ~100 KB
    still_serves(gateway)


def test_a_stalled_body_gets_a_408_and_the_connection_is_freed(gateway: Server) -> None:
    host = gateway.url.removeprefix("http://")
    head = (
        f"POST {CHAT} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {CLIENT_KEY}\r\n"
        "content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    )
    with connect(gateway.url) as sock:
        started = time.monotonic()
        sock.sendall(head.encode() + b'{"model": "mock/gp')  # ... and nothing more
        resp = read_response(sock, timeout=10)
        waited = time.monotonic() - started
    assert resp.status == 408
    assert_error(resp.status, msgspec.json.decode(resp.body), 408, None)
    assert resp.json()["error"]["code"] == "request_timeout"
    assert resp.closed
    assert waited >= BODY_READ_MS / 1000 * 0.9
    still_serves(gateway)


def test_a_slow_but_steady_body_within_the_deadline_is_served(gateway: Server) -> None:
    body = msgspec.json.encode({"model": "mock/gpt-4o", "messages": MESSAGES})
    host = gateway.url.removeprefix("http://")
    head = (
        f"POST {CHAT} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {CLIENT_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    with connect(gateway.url) as sock:
        sock.sendall(head.encode() + body[:10])
        time.sleep(BODY_READ_MS / 1000 / 3)
        sock.sendall(body[10:])
        resp = read_response(sock)
    assert resp.status == 200, resp.body
