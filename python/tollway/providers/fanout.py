"""Several upstream calls answered as one: for APIs that take a batch one part at a time
(Bedrock's Titan embeddings take one text per InvokeModel call, Cohere's at most 96). The parts
are sent at once (a few at a time), each with its own credentials (a signature per body), and
their answers read as one JSON array, in order; the first failing part is the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final

from tollway.upstream import UpstreamClient, UpstreamError, UpstreamResponse

__all__ = ["MAX_PARTS", "post_parts"]

# The most parts one request may become, and how many are in flight at a time.
MAX_PARTS: Final = 256
_IN_FLIGHT: Final = 8

Sign = Callable[[str, Mapping[str, str], bytes], Awaitable[Mapping[str, str]]]


class _Joined:
    """The parts' 2xx answers as one: `[answer, answer, ...]`."""

    __slots__ = ("_parts", "status")

    def __init__(self, parts: Sequence[UpstreamResponse]) -> None:
        self._parts = parts
        self.status = parts[0].status

    def header(self, name: str) -> str | None:
        return self._parts[0].header(name)

    async def read(self, limit: int | None = None) -> bytes:
        bodies = []
        for part in self._parts:
            body = await part.read(limit)
            if limit is not None:
                limit -= len(body)
            bodies.append(body)
        return b"[" + b",".join(bodies) + b"]"

    # Never a stream: these are for the protocol's sake (the parts' reads translate their own).
    errors: tuple[type[BaseException], ...] = ()

    def reader(self) -> Callable[[], Awaitable[bytes]]:
        parts = [self.read]

        async def read() -> bytes:
            return await parts.pop()() if parts else b""

        return read

    def translate(self, e: BaseException) -> UpstreamError:
        return e if isinstance(e, UpstreamError) else UpstreamError("broken")

    def close(self) -> None:
        for part in self._parts:
            part.close()


async def post_parts(
    client: UpstreamClient,
    url: str,
    headers: Mapping[str, str],
    bodies: Sequence[bytes],
    timeout_s: float,
    sign: Sign,
) -> UpstreamResponse:
    """Posts each body to `url` (headers from `sign`), at most a few at a time; a failed part
    (transport error or non-2xx) is the answer, and the other parts are closed."""
    gate = asyncio.Semaphore(_IN_FLIGHT)

    async def one(body: bytes) -> UpstreamResponse:
        async with gate:
            return await client.post(url, await sign(url, headers, body), body, timeout_s)

    tasks = [asyncio.ensure_future(one(b)) for b in bodies]
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        # The client left: nothing will read the parts that did answer.
        for t in tasks:
            t.cancel()
        answered = [t for t in tasks if t.done() and not t.cancelled()]
        _close([t.result() for t in answered if t.exception() is None])
        raise
    answers = [t.result() for t in tasks if t.exception() is None]
    error = next((t.exception() for t in tasks if t.exception() is not None), None)
    if error is not None:
        _close(answers)
        raise error
    failed = next((r for r in answers if r.status >= 300), None)
    if failed is None:
        return _Joined(answers)
    _close([r for r in answers if r is not failed])
    return failed


def _close(parts: Sequence[UpstreamResponse]) -> None:
    for part in parts:
        part.close()
