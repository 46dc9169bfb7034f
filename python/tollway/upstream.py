"""The provider HTTP client behind a small interface, so the library choice stays swappable.

aiohttp is the implementation: under the same Granian app a bare pass-through does about ten
times the requests per second with it than with httpx (see docs/performance.md). One
`ClientSession` per worker, created in the ASGI lifespan, with a keep-alive pool.
Library exceptions are turned into `UpstreamError` here, with a kind and no message text
from the library (which may include URLs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, Protocol

import aiohttp

__all__ = [
    "WIRE_HEADERS",
    "AiohttpUpstream",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamResponse",
]

# Part of every provider request's headers (merged once per config, not per request).
# Without a compressed encoding offered, providers answer uncompressed and bodies pass through;
# and with these present aiohttp adds none of its own (its `skip_auto_headers` costs ~5 µs a
# request: it builds and merges a header multidict on every call).
WIRE_HEADERS = {"accept-encoding": "identity", "user-agent": "tollway"}

UpstreamErrorKind = Literal["connect", "timeout", "broken", "too_large"]


class UpstreamError(Exception):
    """The provider could not be reached (`connect`), took too long (`timeout`), the
    connection broke after the request was sent (`broken`), or its answer is larger than the
    gateway accepts (`too_large`)."""

    def __init__(self, kind: UpstreamErrorKind) -> None:
        super().__init__(kind)
        self.kind: UpstreamErrorKind = kind


class UpstreamResponse(Protocol):
    status: int
    # What `reader()`'s reads may raise besides `UpstreamError`: the client library's own
    # exceptions, which `translate` turns into an `UpstreamError`. A stream's relay reads the
    # library's reader directly (no wrapper coroutine per chunk) and translates around its loop.
    errors: tuple[type[BaseException], ...]

    def header(self, name: str) -> str | None: ...
    async def read(self, limit: int | None = None) -> bytes: ...
    def reader(self) -> Callable[[], Awaitable[bytes]]:
        """The body as it arrives: each call the next part, b"" at the end."""
        ...

    def translate(self, e: BaseException) -> UpstreamError:
        """A read's failure (one of `errors`, an `UpstreamError` or a `TimeoutError`) as an
        `UpstreamError`."""
        ...

    def close(self) -> None: ...


class UpstreamClient(Protocol):
    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> UpstreamResponse: ...
    async def close(self) -> None: ...


def _translate(e: BaseException) -> UpstreamError:
    if isinstance(e, UpstreamError):
        return e
    if isinstance(e, aiohttp.ClientConnectorError):
        return UpstreamError("connect")
    if isinstance(e, asyncio.TimeoutError):  # aiohttp's timeouts subclass it
        return UpstreamError("timeout")
    return UpstreamError("broken")


class _AiohttpResponse:
    __slots__ = ("_resp", "status")

    errors: tuple[type[BaseException], ...] = (TimeoutError, aiohttp.ClientError)

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status

    def header(self, name: str) -> str | None:
        return self._resp.headers.get(name)

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; past `limit` bytes `UpstreamError("too_large")`, refused unread
        when the declared length already says so."""
        resp = self._resp
        try:
            declared = resp.content_length
            if limit is None or (declared is not None and declared <= limit):
                return await resp.read()
            if declared is not None:
                raise UpstreamError("too_large")
            # No length declared (chunked): count as it comes.
            parts, size = [], 0
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise UpstreamError("too_large")
                parts.append(chunk)
            return b"".join(parts)
        except UpstreamError:
            resp.close()  # the rest is never read: this connection cannot be reused
            raise
        except (TimeoutError, aiohttp.ClientError) as e:
            raise _translate(e) from None
        finally:
            resp.release()

    def reader(self) -> Callable[[], Awaitable[bytes]]:
        return self._resp.content.readany

    def translate(self, e: BaseException) -> UpstreamError:
        return _translate(e)

    def close(self) -> None:
        self._resp.close()


class AiohttpUpstream:
    """Provider calls over one pooled aiohttp session (create inside a running loop)."""

    def __init__(self, connect_timeout_s: float, pool_size: int = 1024) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool_size, ttl_dns_cache=60),
        )
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _timeout(self, total_s: float) -> aiohttp.ClientTimeout:
        # Cached: one ClientTimeout per distinct value instead of one per request.
        t = self._timeouts.get(total_s)
        if t is None:
            if len(self._timeouts) > 256:
                self._timeouts.clear()
            t = aiohttp.ClientTimeout(total=total_s, connect=self._connect_timeout_s)
            self._timeouts[total_s] = t
        return t

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> UpstreamResponse:
        try:
            resp = await self._session.post(
                url, data=body, headers=headers, timeout=self._timeout(timeout_s)
            )
        except (TimeoutError, aiohttp.ClientError) as e:
            raise _translate(e) from None
        return _AiohttpResponse(resp)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled session, shared with background tasks (telemetry export)."""
        return self._session

    async def close(self) -> None:
        await self._session.close()
