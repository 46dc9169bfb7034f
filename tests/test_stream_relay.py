"""The stream relay in process, against an upstream whose reads are scripted: the first-token
bound, an empty or failing start (fallback before any byte), a failure of the client library
after the first byte (an in-band error event), the size cap, and a normal end."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

pytest.importorskip("tollway._core", reason="the Rust extension is not built")

from tollway.app import Gateway, create_app
from tollway.proxy import Proxy
from tollway.upstream import UpstreamError

KEY = "relay-key"
CONFIG = f"""
type: gateway-settings
server:
  host: 127.0.0.1
  port: 8080
  max_response_bytes: 4096
---
type: provider-account
name: mock
provider: openai-compatible
base_url: http://127.0.0.1:9/v1
api_key: mock-provider-key
models: [gpt-4o-mini]
---
type: gateway-keys
keys:
  - {{name: relay, key: {KEY}, subject: "user:relay", allowed_models: ["*"]}}
"""
CHUNK = (
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":'
    b'{"content":"tok "},"finish_reason":null}]}\n\n'
)
DONE = b"data: [DONE]\n\n"
HANG = object()  # a read that never answers


class LibraryError(Exception):
    """Stands for the client library's own exception (aiohttp's `ClientPayloadError`)."""


class Scripted:
    """A streamed answer whose reads answer from `script`: bytes, an exception, or `HANG`."""

    status = 200
    errors: tuple[type[BaseException], ...] = (TimeoutError, LibraryError)

    def __init__(self, script: list[Any]) -> None:
        self._script = list(script)
        self.closed = False

    def header(self, name: str) -> str | None:
        return "text/event-stream" if name == "content-type" else None

    async def read(self, limit: int | None = None) -> bytes:
        raise AssertionError("a stream is not read whole")

    async def _next(self) -> bytes:
        step = self._script.pop(0) if self._script else b""
        if step is HANG:
            await asyncio.sleep(60)
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, bytes)
        return step

    def reader(self) -> Callable[[], Awaitable[bytes]]:
        return self._next

    def translate(self, e: BaseException) -> UpstreamError:
        if isinstance(e, UpstreamError):
            return e
        return UpstreamError("timeout" if isinstance(e, TimeoutError) else "broken")

    def close(self) -> None:
        self.closed = True


class Client:
    def __init__(self, script: list[Any]) -> None:
        self.response = Scripted(script)

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> Scripted:
        return self.response

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    path: Path = tmp_path_factory.mktemp("relay") / "gateway.yaml"
    path.write_text(CONFIG)
    return create_app(str(path))


def run(gateway: Gateway, script: list[Any], *headers: tuple[bytes, bytes]) -> tuple[int, bytes]:
    """One streamed chat request through the app; (status, the body the client got)."""
    client = Client(script)
    gateway.proxy = Proxy(gateway.runtime, client)
    raw = msgspec.json.encode(
        {"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        | {"stream": True}
    )
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [
            (b"authorization", f"Bearer {KEY}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            *headers,
        ],
    }
    sent: list[dict[str, Any]] = []  # copies: the relay refills one body message
    got_body = False

    async def receive() -> dict[str, Any]:
        nonlocal got_body
        if not got_body:
            got_body = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await asyncio.get_running_loop().create_future()  # never leaves

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(gateway(scope, receive, send))
    assert client.response.closed
    assert sent[-1].get("more_body") is not True, "the answer ends"
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_whole_stream_is_relayed(gateway: Gateway) -> None:
    status, body = run(gateway, [CHUNK, CHUNK, DONE])
    assert status == 200
    assert body.count(b'"tok "') == 2 and body.endswith(DONE)


def test_the_first_token_bound_is_a_504_before_any_byte(gateway: Gateway) -> None:
    status, body = run(gateway, [HANG], (b"x-tfy-ttft-timeout-ms", b"50"))
    assert status == 504 and b"upstream_timeout" in body


@pytest.mark.parametrize(
    ("first", "status", "code"),
    [
        (b"", 502, b"upstream_"),  # ended before the first byte
        (LibraryError("reset"), 502, b"upstream_"),
        (TimeoutError(), 504, b"upstream_timeout"),
    ],
)
def test_a_stream_that_never_starts_is_an_error_status(
    gateway: Gateway, first: Any, status: int, code: bytes
) -> None:
    got, body = run(gateway, [first])
    assert got == status and code in body and b"event: error" not in body


def test_a_library_failure_after_the_first_byte_is_an_error_event(gateway: Gateway) -> None:
    status, body = run(gateway, [CHUNK, LibraryError("reset")])
    assert status == 200 and b'"tok "' in body
    assert b"event: error" in body and DONE not in body


def test_a_stream_past_the_size_cap_ends_with_an_error_event(gateway: Gateway) -> None:
    status, body = run(gateway, [CHUNK] * 40 + [DONE])  # ~4.4 KB against a 4 KB cap
    assert status == 200
    assert b"event: error" in body and b"upstream_response_too_large" in body
    assert DONE not in body
