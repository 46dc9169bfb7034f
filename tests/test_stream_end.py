"""A stream's end is its terminal event, not the provider closing the connection: a client
that reads to `[DONE]` and leaves while the provider still holds the connection open was
answered (200), not cancelled (499)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import CLIENT_KEY, GatewayFactory, free_port, gateway_config
from prometheus_client.parser import text_string_to_metric_families

_EVENTS = [
    b'{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,'
    b'"delta":{"role":"assistant","content":"Hello"}}]}',
    b'{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,'
    b'"delta":{},"finish_reason":"stop"}]}',
    b'{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}',
    b"[DONE]",
]
# How long the provider keeps the connection open after [DONE] before ending the body.
HOLD_S = 1.5


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _serve(conn: socket.socket) -> None:
    with conn:
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(65536)
        header, _, body = head.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in header.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        )
        conn.sendall(b"".join(_chunk(b"data: " + e + b"\n\n") for e in _EVENTS))
        time.sleep(HOLD_S)  # the answer is complete; the body has not ended yet
        conn.sendall(b"0\r\n\r\n")


@pytest.fixture
def lingering_provider() -> Iterator[str]:
    """An OpenAI-compatible provider that sends a whole stream, then lingers before EOF."""
    port = free_port()
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.2)
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stopping.set()
        thread.join(5)
        server.close()


def _requests_by_status(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "llm_gateway_requests_total":
                status = s.labels["status"]
                out[status] = out.get(status, 0.0) + s.value
    return out


def test_a_client_leaving_after_done_was_answered(
    start_gateway: GatewayFactory, lingering_provider: str
) -> None:
    gw = start_gateway(gateway_config(lingering_provider))
    body = {"model": "mock/small", "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    lines = []
    with (
        httpx.Client(base_url=gw.url, headers=headers, timeout=10) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as resp,
    ):
        assert resp.status_code == 200
        for line in resp.iter_lines():  # as the openai client does: stop at [DONE]
            lines.append(line)
            if line == "data: [DONE]":
                break
    assert any('"Hello"' in line for line in lines)
    # The provider ends its body HOLD_S later; the request's outcome is known by then.
    deadline = time.monotonic() + HOLD_S + 5
    while (counts := _requests_by_status(gw.url)).get("200", 0) + counts.get("499", 0) < 1:
        assert time.monotonic() < deadline, counts
        time.sleep(0.2)
    assert counts == {"200": 1.0}, counts
