"""The Python request path in process: one ASGI call of the gateway with a stubbed upstream.

Each benchmark call serves a batch of 1,000 requests in one event-loop run (a loop start costs
more than a request), so the reported milliseconds read as microseconds per request. The
`floor` case is the least an ASGI pass-through can do with the same stub; the difference to it
is what Tollway's own work (validate, admit, rewrite, headers) costs per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

pytest.importorskip("tollway._core", reason="the Rust extension is not built")

from tollway.app import Gateway, create_app
from tollway.mock.content import Answers
from tollway.mock.openai_api import OPENING, chat_stream_events, chunk_head
from tollway.proxy import Proxy
from tollway.upstream import UpstreamError

Message = MutableMapping[str, Any]
App = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

BATCH = 1000
KEY = "bench-key"
CONFIG = f"""
type: gateway-settings
server: {{host: 127.0.0.1, port: 8080}}
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
  - name: bench
    key: {KEY}
    subject: user:bench
    allowed_models: ["*"]
"""
COMPLETION = msgspec.json.encode(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok " * 25}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 25, "total_tokens": 45},
    }
)
# The load test's stream as the mock upstream sends it: an opening chunk, 25 one-token deltas,
# the finish chunk, the usage chunk the gateway asks for, [DONE].
CHUNKS = chat_stream_events(
    chunk_head("chatcmpl-mock-1", 1764000000, "gpt-4o-mini"),
    OPENING,
    Answers(25).openai_deltas,
    "stop",
    {"prompt_tokens": 17, "completion_tokens": 25, "total_tokens": 42},
)


class StubResponse:
    status = 200

    def __init__(self, stream: bool) -> None:
        self._stream = stream
        self._rest = iter(CHUNKS)

    def header(self, name: str) -> str | None:
        return "text/event-stream" if self._stream and name == "content-type" else None

    async def read(self, limit: int | None = None) -> bytes:
        return COMPLETION

    async def readany(self) -> bytes:
        """As aiohttp's `StreamReader.readany` answers: the next chunk, b"" at the end."""
        return next(self._rest, b"")

    # The relay awaits this directly, as it does aiohttp's `readany` (its reads raise nothing).
    errors: tuple[type[BaseException], ...] = ()

    def reader(self) -> Callable[[], Awaitable[bytes]]:
        return self.readany

    def translate(self, e: BaseException) -> UpstreamError:
        return e if isinstance(e, UpstreamError) else UpstreamError("broken")

    def close(self) -> None:
        pass


class StubClient:
    """The upstream, answering at once: what remains is the gateway's own cost."""

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> StubResponse:
        return StubResponse(b'"stream":true' in body)

    async def close(self) -> None:
        pass


async def floor_app(scope: Message, receive: Any, send: Any) -> None:
    """The minimum: read the body, call the upstream, relay status and body (or chunks)."""
    body = (await receive())["body"]
    resp = await scope["state"]["client"].post("u", {}, body, 600.0)
    if resp._stream:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while chunk := await resp.readany():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": await resp.read()})


def request(stream: bool) -> tuple[Message, bytes]:
    body: dict[str, Any] = {
        "model": "mock/gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Say hello in one short sentence."},
        ],
        "max_tokens": 25,
    }
    if stream:
        body["stream"] = True
    raw = msgspec.json.encode(body)
    scope: Message = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"authorization", f"Bearer {KEY}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            (b"x-tfy-metadata", b'{"project_id":"p1"}'),
        ],
        "state": {"client": StubClient()},
    }
    return scope, raw


async def serve_batch(app: App, scope: Message, raw: bytes) -> int:
    """BATCH requests through `app`; returns how many got a 200."""
    ok = 0
    loop = asyncio.get_running_loop()

    for _ in range(BATCH):
        delivered = False
        status = 0

        def receive() -> asyncio.Future[Message]:
            # As Granian's receive() answers: a future (its PyFutureAwaitable is one to asyncio,
            # so the gateway's disconnect watch runs in no task of its own).
            nonlocal delivered
            message = loop.create_future()
            if not delivered:
                delivered = True
                message.set_result({"type": "http.request", "body": raw, "more_body": False})
            return message  # later ones never resolve: the client never leaves

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(dict(scope), receive, send)
        ok += status == 200
    return ok


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    path: Path = tmp_path_factory.mktemp("bench") / "gateway.yaml"
    path.write_text(CONFIG)
    app = create_app(str(path))
    app.proxy = Proxy(app.runtime, StubClient())
    return app


@pytest.fixture(scope="module")
def loop() -> Any:
    try:
        import uvloop

        new_loop = uvloop.new_event_loop()
    except ImportError:
        new_loop = asyncio.new_event_loop()
    yield new_loop
    new_loop.close()


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream-25-chunks"])
@pytest.mark.parametrize("which", ["floor", "tollway"])
def test_asgi_request_path(
    benchmark: Any, gateway: Gateway, loop: Any, which: str, stream: bool
) -> None:
    scope, raw = request(stream)
    app: Any = floor_app if which == "floor" else gateway
    kind = "stream, 25 chunks" if stream else "non-stream"
    benchmark.group = f"ASGI chat request, stubbed upstream, {kind} (ms per 1,000 = us per request)"
    ok = benchmark.pedantic(
        lambda: loop.run_until_complete(serve_batch(app, scope, raw)), rounds=10, warmup_rounds=1
    )
    assert ok == BATCH
