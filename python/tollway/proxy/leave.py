"""A streamed request raced against its client leaving.

Granian's `send()` does not fail after the client left; a pending `receive()` says so. That
pending `receive()` is a future Granian's runtime resolves from another thread: ~21k
instructions in the worker, and more in CPU time (30-50 µs a stream on one CPU, measured with
perf: a thread switch each time; docs/performance.md). So it is not made per request: one
ticker per worker makes it for the streams that are still running one to two ticks (`TICK_S`)
after they started. A stream over sooner never pays for it, and a client that leaves is noticed
at most two ticks late, instead of at once; in the meantime the answer goes on to a closed
connection (no one reads it, nothing else changes).

The request runs in its own task, and a client that leaves cancels that task where it waits (no
second task, no `asyncio.wait`). A client that leaves once the whole answer is out (it stops
reading at `[DONE]`) cancels nothing: the request finishes its bookkeeping as answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from tollway.asgi import Receive

__all__ = ["TICK_S", "LeaveWatch"]

log = logging.getLogger("tollway.proxy")

# How often the ticker arms the watch of the streams that outlived a tick.
TICK_S = 0.02
# The ticker stops after this many ticks without a stream (an idle worker has no task).
_IDLE_TICKS = 50


class Delivery(Protocol):
    """What the race reads of a stream when its client leaves: was the answer all out?"""

    @property
    def answered(self) -> bool: ...


class _Race:
    __slots__ = ("delivery", "left", "receive", "running", "task", "watch")

    def __init__(self, task: asyncio.Task[Any], receive: Receive, delivery: Delivery) -> None:
        self.task, self.receive, self.delivery = task, receive, delivery
        self.running, self.left = True, False
        self.watch: asyncio.Future[Any] | None = None

    def arm(self) -> None:
        if self.running and self.watch is None:
            watch = self.watch = asyncio.ensure_future(self.receive())
            watch.add_done_callback(self._on_leave)

    def _on_leave(self, watch: asyncio.Future[Any]) -> None:
        if not self.running or watch.cancelled():
            return
        if watch.exception() is None and watch.result().get("type") == "http.request":
            # The body's closing message (`read_body` stops at its declared length without
            # waiting for it): the next one says the client left.
            self.watch = None
            self.arm()
            return
        # Once the meter has read the answer's end, the client leaving cancels nothing (the
        # relay does not mark that per chunk: it is read here, when a client leaves).
        if not self.delivery.answered:
            self.left = True
            self.task.cancel()


class LeaveWatch:
    """Runs streamed requests raced against their clients leaving (one per worker)."""

    def __init__(self) -> None:
        # Races started since the last tick, and those that had already started then: the
        # latter have outlived a whole tick and are armed at the next one.
        self._new: set[_Race] = set()
        self._old: set[_Race] = set()
        self._ticker: asyncio.Task[None] | None = None

    async def run(self, work: Coroutine[Any, Any, None], receive: Receive, delivery: Delivery,
                  label: str) -> None:  # fmt: skip
        """Awaits `work` in the current task; cancels it if the client leaves first."""
        task = asyncio.current_task()
        if task is None:  # not inside a task: nothing to cancel
            await work
            return
        race = _Race(task, receive, delivery)
        self._new.add(race)
        if self._ticker is None or self._ticker.done():  # (done: its loop was closed)
            self._ticker = asyncio.ensure_future(self._tick())
        try:
            await work
        except asyncio.CancelledError:
            if not race.left:
                raise
            task.uncancel()
            log.info("client disconnected; upstream call for %s cancelled", label)
        finally:
            race.running = False
            self._new.discard(race)
            self._old.discard(race)
            if race.watch is not None:
                race.watch.cancel()

    async def _tick(self) -> None:
        idle = 0
        try:
            while idle < _IDLE_TICKS:
                await asyncio.sleep(TICK_S)
                due, self._old, self._new = self._old, self._new, set()
                idle = 0 if due or self._old else idle + 1
                for race in due:
                    race.arm()
        finally:
            self._ticker = None
