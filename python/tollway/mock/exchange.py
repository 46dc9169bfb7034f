"""One HTTP exchange of the mock: ASGI send/receive helpers, disconnect watching, the record."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

import msgspec

__all__ = [
    "ASGIApp",
    "Call",
    "MockAbort",
    "Receive",
    "RequestRecord",
    "Scope",
    "Send",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_HEADERS = ((b"content-type", b"application/json"),)
SSE_HEADERS = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"))
# An upper bound for "never answers", so a forgotten request cannot pin a worker for ever.
_HANG_S = 24 * 3600.0


class MockAbort(Exception):
    """Raised inside the app to make Granian cut a response it has started."""


class RequestRecord:
    """What one request looked like, for `GET /_mock/requests`; the body is decoded lazily."""

    __slots__ = ("body", "disconnected", "headers", "method", "path", "query", "status")

    def __init__(self, scope: Scope, body: bytes) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: bytes = scope.get("query_string", b"")
        self.headers: Iterable[tuple[bytes, bytes]] = scope["headers"]
        self.body = body
        self.status: int | None = None
        self.disconnected = False

    def to_json(self) -> dict[str, Any]:
        headers: dict[str, str] = {}
        for raw_name, raw_value in self.headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        try:
            body: Any = msgspec.json.decode(self.body) if self.body else None
        except msgspec.DecodeError:
            body = None
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query.decode("latin-1"),
            "headers": headers,
            "body": body,
            "status": self.status,
            "disconnected": self.disconnected,
        }


class Call:
    """Response helpers for one request, with a lazily started watch for client disconnect.

    Granian's `send()` does not fail once the client is gone, so the only signal is an
    `http.disconnect` from `receive()`. Requests answered at once never start the watch.
    """

    __slots__ = ("_receive", "_send", "_watcher", "record", "scope")

    def __init__(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
        self.scope = scope
        self.record = record
        self._receive = receive
        self._send = send
        self._watcher: asyncio.Future[Message] | None = None

    def _watch(self) -> asyncio.Future[Message]:
        if self._watcher is None:
            # The body is fully read, so the next message can only be `http.disconnect`.
            self._watcher = asyncio.ensure_future(self._receive())
        return self._watcher

    def gone(self) -> bool:
        """True (and recorded) when the client has disconnected."""
        w = self._watcher
        if w is None or not w.done():
            return False
        if not w.cancelled():
            w.exception()  # marks a failed receive as seen; either way the client is gone
        self.record.disconnected = True
        return True

    async def sleep(self, seconds: float) -> bool:
        """Waits `seconds` unless the client leaves first; False if it left."""
        if seconds > 0:
            w = self._watch()
            if not w.done():
                await asyncio.wait((w,), timeout=seconds)
        return not self.gone()

    async def hang(self) -> None:
        """Never answers; returns when the client disconnects."""
        await self.sleep(_HANG_S)

    def close(self) -> None:
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()

    async def respond(
        self,
        status: int,
        body: bytes,
        headers: Sequence[tuple[bytes, bytes]] = JSON_HEADERS,
    ) -> None:
        self.record.status = status
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def respond_partial(self, body: bytes, declared: int) -> None:
        """Starts a 200 announcing `declared` bytes, sends `body` (fewer), then cuts it."""
        self.record.status = 200
        headers = (*JSON_HEADERS, (b"content-length", str(declared).encode()))
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": True})
        raise MockAbort("mock: connection cut mid-body")

    async def stream(
        self,
        events: Sequence[bytes],
        paced: range,
        itl_s: float,
        headers: Sequence[tuple[bytes, bytes]] = SSE_HEADERS,
    ) -> bool:
        """Sends an SSE (or other streamed) response, one body message per event, pausing
        `itl_s` before the events whose index is in `paced`. False if the client left; the
        response is not ended."""
        self.record.status = 200
        self._watch()
        send = self._send
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i, event in enumerate(events):
            if itl_s > 0 and i in paced:
                if not await self.sleep(itl_s):
                    return False
            elif self.gone():
                return False
            await send({"type": "http.response.body", "body": event, "more_body": True})
        return True

    async def end(self) -> None:
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    def reset(self) -> None:
        """Closes the connection with nothing sent, which ASGI itself cannot express.

        Granian answers 500 when an app raises before `http.response.start`, so the socket is
        found among this worker's descriptors by its addresses and shut down: the client sees
        the server close the connection without a response. Without /proc (not Linux) this
        falls back to raising, i.e. a 500.
        """
        conn = _find_connection(self.scope.get("client"), self.scope.get("server"))
        if conn is None:
            raise MockAbort("mock: cannot find the connection to reset")
        with conn:
            conn.shutdown(socket.SHUT_RDWR)


def _address(value: Any) -> tuple[str, int] | None:
    # Granian reports ports as strings; ASGI says int.
    if not value or len(value) < 2:
        return None
    try:
        return str(value[0]), int(value[1])
    except (TypeError, ValueError):
        return None


def _find_connection(client: Any, server: Any) -> socket.socket | None:
    peer, local = _address(client), _address(server)
    if peer is None or local is None:
        return None
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for name in fds:
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            conn = socket.socket(fileno=os.dup(fd))
        except (OSError, ValueError):
            continue
        with contextlib.suppress(OSError):
            if conn.getpeername()[:2] == peer and conn.getsockname()[:2] == local:
                return conn
        conn.close()
    return None
