"""Where cached answers live: one process's memory (LRU, bounded in bytes) or Redis (shared
by replicas). A store never raises: an error or a slow Redis is a miss, and a write that
cannot be made is dropped; both are counted."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

import msgspec

__all__ = ["Entry", "MemoryStore", "RedisStore", "Store"]

log = logging.getLogger("tollway.cache")

Count = Callable[[str, tuple[str, ...], float], None]
# Redis writes waiting at once; past it, new ones are dropped (and counted).
MAX_PENDING_WRITES = 256
KEY_PREFIX = "tollway:cache:"


class Entry(msgspec.Struct, array_like=True, gc=False):
    """A stored answer: its headers that matter, the body messages as sent, and what the
    call cost (a hit saves it). Not tracked by the garbage collector (no cycles: bytes only),
    so a full cache does not slow every collection."""

    content_type: bytes
    resolved: bytes
    chunks: tuple[bytes, ...]
    cost_usd: float

    # Bytes of the body messages (set by whoever builds it, for the memory bound).
    body_bytes: int = 0


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Entry).decode


class Store(Protocol):
    async def get(self, key: str) -> Entry | None: ...
    def put(self, key: str, entry: Entry, ttl_s: int) -> None: ...
    async def close(self) -> None: ...


class MemoryStore:
    """Entries as objects (no encoding); least recently used go first once `max_bytes` would
    be exceeded (a dict keeps insertion order: a hit moves its entry to the end); expired
    ones are dropped when read."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.entries: dict[str, tuple[float, int, Entry]] = {}
        self.clock = clock

    async def get(self, key: str) -> Entry | None:
        found = self.entries.pop(key, None)
        if found is None:
            return None
        if found[0] <= self.clock():
            self.size -= found[1]
            return None
        self.entries[key] = found
        return found[2]

    def put(self, key: str, entry: Entry, ttl_s: int) -> None:
        cost = entry.body_bytes + len(key) + 128
        if cost > self.max_bytes:
            return
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= old[1]
        entries = self.entries
        while self.size + cost > self.max_bytes and entries:
            self.size -= entries.pop(next(iter(entries)))[1]
        entries[key] = (self.clock() + ttl_s, cost, entry)
        self.size += cost

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

    async def get(self, key: str) -> Entry | None:
        try:
            value = await asyncio.wait_for(self.client.get(KEY_PREFIX + key), self.timeout_s)
        except TimeoutError:
            self._error("timeout")
            return None
        except Exception:  # any Redis or connection failure is a miss
            self._error("redis_error")
            return None
        if not isinstance(value, bytes):
            return None
        try:
            return _decode(value)
        except msgspec.DecodeError:
            self._error("bad_entry")
            return None

    def put(self, key: str, entry: Entry, ttl_s: int) -> None:
        if len(self.pending) >= MAX_PENDING_WRITES:
            self._error("write_dropped")
            return
        task = asyncio.ensure_future(self._set(KEY_PREFIX + key, _encode(entry), ttl_s))
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
