"""The body-read deadline: a client that sends its head and then stalls gets a 408.

One ticker per worker checks the reads in progress, instead of a timer per request (a
`loop.call_later` plus its cancel costs several µs; a dict entry well under one): every
`tick` it cancels the reads past their deadline, and the cancelled read turns into the 408.
The ticker stops by itself after a while without reads, so an idle worker has no task.
"""

from __future__ import annotations

import asyncio
from time import monotonic

from tollway.asgi import Receive, read_body
from tollway.errors import GatewayError

__all__ = ["BodyReadWatch"]

_IDLE_TICKS = 10


class BodyReadWatch:
    """Bounds the time a request body may take to arrive (`read` answers 408 past it)."""

    def __init__(self) -> None:
        self._reading: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._tick_s = 1.0

    async def read(
        self, receive: Receive, limit: int, content_length: bytes | None, timeout_s: float
    ) -> bytes:
        task = asyncio.current_task()
        if task is None:  # not inside a task: nothing to cancel, read unbounded
            return await read_body(receive, limit, content_length)
        self._reading[task] = monotonic() + timeout_s
        if self._ticker is None or timeout_s / 4 < self._tick_s:
            self._start(timeout_s)
        try:
            return await read_body(receive, limit, content_length)
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            raise GatewayError.request_timeout(timeout_s) from None
        finally:
            self._reading.pop(task, None)

    def _start(self, timeout_s: float) -> None:
        # A deadline is missed by at most a quarter of the timeout (and at most 1 s).
        self._tick_s = min(1.0, max(0.01, timeout_s / 4))
        if self._ticker is None:
            self._ticker = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        idle = 0
        try:
            while idle < _IDLE_TICKS:
                await asyncio.sleep(self._tick_s)
                reading = self._reading
                idle = 0 if reading else idle + 1
                now = monotonic()
                for task, deadline in list(reading.items()):
                    if deadline <= now and task not in self._expired:
                        self._expired.add(task)
                        task.cancel()
        finally:
            self._ticker = None
