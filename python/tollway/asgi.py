"""ASGI plumbing: the request head in one pass, a bounded body read, and response helpers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from tollway.engine import read_head
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


class RequestHead:
    """The request headers the gateway reads, picked out of the ASGI list in one pass (by the
    core's `read_head`)."""

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
        # `request_id`: the client's id when it is short and printable ASCII; else 96 random
        # bits as 24 hex digits, made by the core (its generator is reseeded in each forked
        # worker; an id is unique, not secret).
        (
            self.authorization,
            self.content_length,
            self.metadata,
            self.request_id,
            self.timeout_ms,
            self.ttft_timeout_ms,
            self.traceparent,
            self.guardrails,
            self.cache_config,
            self.logging_config,
        ) = read_head(headers)


async def read_body(receive: Receive, limit: int, content_length: bytes | None) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed `limit` (without reading it)."""
    declared = -1
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise GatewayError.bad_request("Content-Length is not a number") from None
        if declared > limit:
            raise GatewayError.too_large(limit)
    msg = await receive()
    body: bytes = msg.get("body", b"")
    # All the declared bytes are here: the closing empty message is not waited for (the
    # server frames the body by its Content-Length; a stream's disconnect watch skips it).
    if not msg.get("more_body", False) or len(body) == declared:
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
        if size == declared:
            break
    return b"".join(parts)


async def send_json(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(
    send: Send, err: GatewayError, request_id: bytes, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    headers: Headers = [JSON, (b"x-request-id", request_id), *err.headers, *extra]
    await send_json(send, err.status, err.body(), headers)
