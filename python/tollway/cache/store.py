"""Where cached answers live: one process's memory (LRU, bounded in bytes) or Redis (shared
by replicas). A store never raises: an error or a slow Redis is a miss, and a write that
cannot be made is dropped; both are counted."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

__all__ = ["MemoryStore", "RedisStore", "Store"]

log = logging.getLogger("tollway.cache")

Count = Callable[[str, tuple[str, ...], float], None]
# Redis writes waiting at once; past it, new ones are dropped (and counted).
MAX_PENDING_WRITES = 256
KEY_PREFIX = "tollway:cache:"


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, value: bytes, ttl_s: int) -> None: ...
    async def close(self) -> None: ...


class MemoryStore:
    """Least recently used entries go first once `max_bytes` would be exceeded; expired ones
    are dropped when read."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.clock = clock

    async def get(self, key: str) -> bytes | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self.clock():
            self._drop(key)
            return None
        self.entries.move_to_end(key)
        return value

    def put(self, key: str, value: bytes, ttl_s: int) -> None:
        cost = len(value) + len(key)
        if cost > self.max_bytes:
            return
        if key in self.entries:
            self._drop(key)
        while self.size + cost > self.max_bytes and self.entries:
            self._drop(next(iter(self.entries)))
        self.entries[key] = (self.clock() + ttl_s, value)
        self.size += cost

    def _drop(self, key: str) -> None:
        _, value = self.entries.pop(key)
        self.size -= len(value) + len(key)

    async def close(self) -> None:
        self.entries.clear()
        self.size = 0


class RedisStore:
    """`GET` on the request path, bounded by `timeout_s` (the opt-in network call); `SET` with
    an expiry in the background, a bounded number at a time."""

    def __init__(self, url: str, timeout_s: float, count: Count | None = None) -> None:
        import redis.asyncio as redis  # only deployments caching in Redis load it

        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.timeout_s = timeout_s
        self.count = count
        self.pending: set[asyncio.Task[None]] = set()

    def _error(self, reason: str) -> None:
        if self.count is not None:
            self.count("llm_gateway_cache_errors_total", (reason,), 1.0)

    async def get(self, key: str) -> bytes | None:
        try:
            value = await asyncio.wait_for(self.client.get(KEY_PREFIX + key), self.timeout_s)
        except TimeoutError:
            self._error("timeout")
            return None
        except Exception:  # any Redis or connection failure is a miss
            self._error("redis_error")
            return None
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes, ttl_s: int) -> None:
        if len(self.pending) >= MAX_PENDING_WRITES:
            self._error("write_dropped")
            return
        task = asyncio.ensure_future(self._set(KEY_PREFIX + key, value, ttl_s))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _set(self, key: str, value: bytes, ttl_s: int) -> None:
        try:
            await asyncio.wait_for(self.client.set(key, value, ex=ttl_s), self.timeout_s * 4)
        except Exception:
            self._error("write_failed")

    async def close(self) -> None:
        for task in list(self.pending):
            task.cancel()
        try:
            await self.client.aclose()
        except Exception:
            log.debug("closing the cache's Redis client failed", exc_info=True)
