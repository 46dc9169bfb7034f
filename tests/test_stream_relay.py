"""The stream relay in process, against an upstream whose reads are scripted: the first-token
bound, an empty or failing start (fallback before any byte), a failure of the client library
after the first byte (an in-band error event), the size cap, and a normal end."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
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
PAUSE = object()  # a read that answers after a while


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
        if step is PAUSE:
            await asyncio.sleep(0.05)
            return await self._next()
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


class Outcome:
    def __init__(self, status: int, body: bytes, ended: bool, upstream: Scripted) -> None:
        self.status, self.body, self.ended, self.upstream = status, body, ended, upstream


def run(
    gateway: Gateway, script: list[Any], *headers: tuple[bytes, bytes], leave_at: bytes = b""
) -> Outcome:
    """One streamed chat request through the app. With `leave_at`, the client leaves once a
    body part it got holds those bytes."""
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
    sent: list[MutableMapping[str, Any]] = []  # copies: the relay refills one body message
    got_body = False
    gone: asyncio.Future[MutableMapping[str, Any]] | None = None

    async def receive() -> MutableMapping[str, Any]:
        nonlocal got_body, gone
        if not got_body:
            got_body = True
            return {"type": "http.request", "body": raw, "more_body": False}
        gone = asyncio.get_running_loop().create_future()
        if any(leave_at in m.get("body", b"") for m in sent if leave_at):
            gone.set_result({"type": "http.disconnect"})
        return await gone

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))
        if leave_at and leave_at in message.get("body", b"") and gone is not None:
            gone.set_result({"type": "http.disconnect"})

    asyncio.run(gateway(scope, receive, send))
    assert client.response.closed
    body = b"".join(m.get("body", b"") for m in sent[1:])
    ended = sent[-1].get("more_body") is False
    return Outcome(sent[0]["status"], body, ended, client.response)


def test_a_whole_stream_is_relayed(gateway: Gateway) -> None:
    got = run(gateway, [CHUNK, CHUNK, DONE])
    assert got.status == 200 and got.ended
    assert got.body.count(b'"tok "') == 2 and got.body.endswith(DONE)


def test_the_first_token_bound_is_a_504_before_any_byte(gateway: Gateway) -> None:
    got = run(gateway, [HANG], (b"x-tfy-ttft-timeout-ms", b"50"))
    assert got.status == 504 and b"upstream_timeout" in got.body


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
    got = run(gateway, [first])
    assert got.status == status and code in got.body and b"event: error" not in got.body


def test_a_library_failure_after_the_first_byte_is_an_error_event(gateway: Gateway) -> None:
    got = run(gateway, [CHUNK, LibraryError("reset")])
    assert got.status == 200 and got.ended and b'"tok "' in got.body
    assert b"event: error" in got.body and DONE not in got.body


def test_a_stream_past_the_size_cap_ends_with_an_error_event(gateway: Gateway) -> None:
    got = run(gateway, [CHUNK] * 40 + [DONE])  # ~4.4 KB against a 4 KB cap
    assert got.status == 200 and got.ended
    assert b"event: error" in got.body and b"upstream_response_too_large" in got.body
    assert DONE not in got.body


def test_a_client_leaving_after_the_answers_end_cancels_nothing(gateway: Gateway) -> None:
    got = run(gateway, [CHUNK, DONE, PAUSE, b""], leave_at=DONE)
    assert got.status == 200 and got.body.endswith(DONE)
    assert got.ended and not got.upstream._script, "read to the upstream's end"


def test_a_client_leaving_mid_answer_cancels_the_stream(gateway: Gateway) -> None:
    got = run(gateway, [CHUNK, PAUSE, CHUNK, PAUSE, DONE], leave_at=b'"tok "')
    assert got.status == 200 and DONE not in got.body
    assert not got.ended and got.upstream._script, "the upstream read was cancelled"
