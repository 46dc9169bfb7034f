"""One worker's background sync of rate-limit and budget counters with Redis.

Every worker process is a replica with its own engine. Requests are decided locally and never
wait on Redis; every `sync_interval_ms` this task drains what the engine consumed, adds it to
shared counters (`INCRBYFLOAT`, expiring after two windows), reads back the global totals and
hands them to the engine, in one pipelined round trip that also refreshes a heartbeat so each
replica knows how many replicas share a limit. In the same round trip a script grants leases:
each replica admits only from its slice of what is left of a limit (a `1/replicas` part, whole
requests for request limits), taken here ahead of use, and hands back what it left idle, so a
burst across replicas cannot pass the limit although no request waits on Redis. When Redis is
unreachable or silent (every call has connect and read timeouts), unpushed deltas are kept for
later and each replica enforces `1/replicas` of every limit and budget until Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tollway.engine import (
    Engine,
    Settings,
    apply_lease,
    apply_remote,
    drain_deltas,
    set_replicas,
    set_share,
    sync_tick,
)

__all__ = ["RedisSync"]

log = logging.getLogger("tollway.state")

PREFIX = "tollway:"
REPLICAS_KEY = "tollway:replicas"
# Bounds on what one replica holds and sends: deltas waiting out an outage, counters pushed per
# round trip, and counters read back although nothing here touched them this interval.
MAX_PENDING = 100_000
MAX_PUSH = 5_000
MAX_WATCHED = 10_000
# A counter this replica has not pushed to for this long is no longer read back: if a request
# for it comes, its first push returns the global total.
WATCH_S = 10.0
# Grants a slice of what is left of a counter: KEYS[1] the counter, ARGV limit, replicas, unit
# (grants are whole multiples of it unless 0), ttl_ms. Returns {grant, total} as strings (a Lua
# number would come back truncated to an integer).
LEASE_SCRIPT = """
local total = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit, n, unit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local left = limit - total
local grant = 0
if left > 0 then
  grant = left / math.max(n, 1)
  if unit > 0 then
    grant = math.floor(grant / unit) * unit
    if grant < unit and left >= unit then grant = unit end
  end
end
if grant > 0 then
  total = tonumber(redis.call('INCRBYFLOAT', KEYS[1], tostring(grant)))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return {tostring(grant), tostring(total)}
"""


def _where(url: str) -> str:
    """Host and port (or socket path) of a Redis URL, without credentials, for logs."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"


class RedisSync:
    """Syncs the current engine's limits and budgets with Redis until stopped.

    `outages` (times Redis became unreachable), `connected`, `replicas` (last known count, this
    one included), `syncs`, `pending` and `dropped` are for metrics and tests.
    """

    def __init__(
        self,
        url: str,
        current: Callable[[], Engine],
        interval_s: float = 0.1,
        timeout_s: float = 0.25,
        replica_id: str | None = None,
        count: Callable[[str, tuple[str, ...]], None] | None = None,
    ) -> None:
        self.current = current
        # Metrics hook: count(counter name, labels), called on the event loop.
        self._count = count or (lambda _name, _labels: None)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.where = _where(url)
        self.replica_id = replica_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        # A dead replica leaves the count after this long without a heartbeat.
        self.heartbeat_ttl_ms = max(3000, int(interval_s * 20_000))
        # No retries inside the client: a failed round trip is retried by the next tick, with
        # the deltas it carried, so a silent Redis costs one timeout per tick and nothing more.
        self.redis: Redis = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._lease = self.redis.register_script(LEASE_SCRIPT)
        self.connected = False
        self.outages = 0
        self.replicas = 1
        self.syncs = 0
        self.dropped = 0
        self._down = False
        self._warned_rejected = False
        # Counter name -> (amount not yet in Redis, ttl_ms); insertion order is age.
        self._pending: dict[str, tuple[float, int]] = {}
        # Counter name -> monotonic time of our last push to it.
        self._watched: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        current: Callable[[], Engine],
        count: Callable[[str, tuple[str, ...]], None] | None = None,
    ) -> RedisSync:
        """The sync a `gateway-settings.state` block asks for (backend `redis`)."""
        if settings.redis_url is None:
            raise ValueError("state.backend is redis but state.redis_url is not set")
        return cls(
            settings.redis_url,
            current,
            interval_s=settings.sync_interval_ms / 1000,
            timeout_s=settings.redis_timeout_ms / 1000,
            count=count,
        )

    @property
    def pending(self) -> int:
        """Counters with consumption not yet added in Redis."""
        return len(self._pending)

    def start(self) -> None:
        """Starts the background task on the running loop."""
        # The first drain switches tracking on: done now, before the worker serves requests.
        self._take(drain_deltas(self.current()))
        self._task = asyncio.get_running_loop().create_task(self.run(), name="tollway-redis-sync")

    async def stop(self) -> None:
        """Stops the task, then pushes what is left and leaves the replica count (bounded)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._round_trip_s()):
                await self.sync_once()
                await self.redis.zrem(REPLICAS_KEY, self.replica_id)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout_s):
                await self.redis.aclose()

    async def run(self) -> None:
        """Syncs every `interval_s` until cancelled; an unexpected error costs one tick."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.sync_once()
            except Exception:
                log.exception("state sync failed unexpectedly; retrying next interval")
            await asyncio.sleep(max(0.0, self.interval_s - (loop.time() - started)))

    def _round_trip_s(self) -> float:
        # Connecting (with its handshake) and the pipeline each have `timeout_s`; this outer
        # bound only guards against a client that would not honour them.
        return 3 * self.timeout_s

    async def sync_once(self) -> bool:
        """One exchange with Redis; returns whether it succeeded."""
        engine = self.current()
        deltas, wants = sync_tick(engine)
        self._take(deltas)
        now = time.monotonic()
        pushes = list(self._pending.items())[:MAX_PUSH]
        pushed = {k for k, _ in pushes}
        # A lease is asked for once the counter holds everything this replica owes it.
        leases = [w for w in wants if w[0] in pushed or w[0] not in self._pending]
        watched = self._watched
        while watched and now - next(iter(watched.values())) >= WATCH_S:
            del watched[next(iter(watched))]
        # A counter with deltas still here reads less than what we drained for it, which the
        # engine would take for a counter Redis lost: read it after its push.
        reads = [k for k in watched if k not in self._pending]
        wall_ms = int(time.time() * 1000)
        try:
            async with asyncio.timeout(self._round_trip_s()):
                pipe = self.redis.pipeline(transaction=False)
                pipe.zadd(REPLICAS_KEY, {self.replica_id: wall_ms})
                pipe.zremrangebyscore(REPLICAS_KEY, "-inf", wall_ms - self.heartbeat_ttl_ms)
                pipe.zcard(REPLICAS_KEY)
                pipe.pexpire(REPLICAS_KEY, self.heartbeat_ttl_ms)
                for key, (amount, ttl_ms) in pushes:
                    pipe.incrbyfloat(PREFIX + key, amount)
                    pipe.pexpire(PREFIX + key, ttl_ms)
                for key, limit, unit, ttl_ms in leases:
                    args = [limit, self.replicas, unit, ttl_ms]
                    await self._lease(keys=[PREFIX + key], args=args, client=pipe)
                if reads:
                    pipe.mget([PREFIX + k for k in reads])
                results: list[Any] = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError, TimeoutError) as e:
            self._failed(engine, e)
            return False
        self._succeeded(engine, results, pushes, reads, now)
        self._granted(engine, results[4 + 2 * len(pushes) :], leases, now)
        return True

    def _granted(
        self,
        engine: Engine,
        results: list[Any],
        leases: list[tuple[str, float, float, int]],
        now: float,
    ) -> None:
        for (key, *_), answer in zip(leases, results, strict=False):
            if not isinstance(answer, list) or len(answer) != 2:
                continue  # refused by Redis: the next tick asks again
            if apply_lease(engine, key, float(answer[0]), float(answer[1])):
                self._watched.pop(key, None)
                self._watched[key] = now

    def _take(self, deltas: list[tuple[str, float, int]]) -> None:
        pending = self._pending
        for key, amount, ttl_ms in deltas:
            before = pending.get(key)
            pending[key] = (amount + (before[0] if before else 0.0), ttl_ms)
        excess = len(pending) - MAX_PENDING
        if excess > 0:
            # A very long outage: the oldest deltas go (their windows are the likeliest over).
            for key in list(pending)[:excess]:
                del pending[key]
            self.dropped += excess

    def _succeeded(
        self,
        engine: Engine,
        results: list[Any],
        pushes: list[tuple[str, tuple[float, int]]],
        reads: list[str],
        now: float,
    ) -> None:
        count = results[2]
        if isinstance(count, int) and count > 0:
            self.replicas = count
        for i, (key, _) in enumerate(pushes):
            del self._pending[key]
            total = results[4 + 2 * i]
            if isinstance(total, Exception):
                # Redis refused this counter (say, a key of another type): retrying cannot help.
                self.dropped += 1
                if not self._warned_rejected:
                    self._warned_rejected = True
                    log.warning("Redis rejected a state counter: %s", total)
                continue
            self._watched.pop(key, None)
            if apply_remote(engine, key, float(total)):
                # Re-inserted: the dict stays ordered by last push, oldest first.
                self._watched[key] = now
                if len(self._watched) > MAX_WATCHED:
                    del self._watched[next(iter(self._watched))]
        if reads:
            values = results[-1]
            if isinstance(values, list):
                for key, value in zip(reads, values, strict=True):
                    if value is not None and not apply_remote(engine, key, float(value)):
                        self._watched.pop(key, None)
        set_share(engine, 1)
        set_replicas(engine, self.replicas)
        self.syncs += 1
        self._count("llm_gateway_state_sync_total", ("ok",))
        self.connected = True
        if self._down:
            self._down = False
            log.warning(
                "Redis at %s is reachable again: limits are shared across %d replicas",
                self.where,
                self.replicas,
            )

    def _failed(self, engine: Engine, error: BaseException) -> None:
        # Every tick, not only the first: a reload may have swapped in another engine.
        set_share(engine, self.replicas)
        set_replicas(engine, 0)
        self.connected = False
        self._count("llm_gateway_state_sync_total", ("failed",))
        if not self._down:
            self._down = True
            self.outages += 1
            self._count("llm_gateway_state_sync_outages_total", ())
            log.warning(
                "Redis at %s is unreachable (%s): each replica now enforces 1/%d of every "
                "limit and budget on its own until it returns",
                self.where,
                type(error).__name__,
                self.replicas,
            )
