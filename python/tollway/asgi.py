"""ASGI plumbing: the request head in one pass, a bounded body read, and response helpers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from random import getrandbits
from typing import Any

from tollway.errors import GatewayError

__all__ = [
    "JSON",
    "Message",
    "Receive",
    "RequestHead",
    "Scope",
    "Send",
    "read_body",
    "send_error",
    "send_json",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON = (b"content-type", b"application/json")
_MAX_REQUEST_ID = 128


# The headers read, by the attribute each goes to (names arrive lowercased from the server).
_SLOTS = {
    b"authorization": "authorization",
    b"content-length": "content_length",
    b"x-tfy-metadata": "metadata",
    b"x-request-id": "request_id",
    b"x-tfy-request-timeout": "timeout_ms",
    b"x-tfy-ttft-timeout-ms": "ttft_timeout_ms",
    b"traceparent": "traceparent",
    b"x-tfy-guardrails": "guardrails",
    b"x-tfy-cache-config": "cache_config",
    b"x-tfy-logging-config": "logging_config",
}


class RequestHead:
    """The request headers the gateway reads, picked out of the ASGI list in one pass."""

    __slots__ = (
        "authorization",
        "cache_config",
        "content_length",
        "guardrails",
        "logging_config",
        "metadata",
        "request_id",
        "timeout_ms",
        "traceparent",
        "ttft_timeout_ms",
    )

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.authorization: bytes | None = None
        self.metadata: bytes | None = None
        self.content_length: bytes | None = None
        self.timeout_ms: bytes | None = None
        self.ttft_timeout_ms: bytes | None = None
        self.guardrails: bytes | None = None
        self.traceparent: bytes | None = None
        self.cache_config: bytes | None = None
        self.logging_config: bytes | None = None
        request_id: bytes | None = None
        # One dict lookup per header (clients send a dozen the gateway does not read).
        slots = _SLOTS
        for name, value in headers:
            slot = slots.get(name)
            if slot is not None:
                if slot == "request_id":
                    request_id = value
                else:
                    setattr(self, slot, value)
        # A client's request id is echoed only when it is short and printable ASCII.
        if (
            request_id
            and len(request_id) <= _MAX_REQUEST_ID
            and all(32 < b < 127 for b in request_id)
        ):
            self.request_id = request_id
            return
        # 96 random bits as 24 hex digits: the process's generator (reseeded in each forked
        # worker), not a system call per request; an id is unique, not secret.
        self.request_id = b"%024x" % getrandbits(96)


async def read_body(receive: Receive, limit: int, content_length: bytes | None) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed `limit` (without reading it)."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise GatewayError.bad_request("Content-Length is not a number") from None
        if declared > limit:
            raise GatewayError.too_large(limit)
    msg = await receive()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body", False):
        if len(body) > limit:
            raise GatewayError.too_large(limit)
        return body
    parts = [body]
    size = len(body)
    while msg.get("more_body", False):
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise GatewayError.disconnected()
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise GatewayError.too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


async def send_json(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(
    send: Send, err: GatewayError, request_id: bytes, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    headers: Headers = [JSON, (b"x-request-id", request_id), *err.headers, *extra]
    await send_json(send, err.status, err.body(), headers)
