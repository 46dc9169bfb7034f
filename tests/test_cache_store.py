"""The memory store of the response cache: bounded in bytes, least recently used first, TTL."""

from __future__ import annotations

import asyncio

from tollway.cache.store import Entry, MemoryStore


def entry(size: int) -> Entry:
    return Entry(b"application/json", b"a/m", (b"x" * size,), 0.01, size)


def test_lru_bound_in_bytes_and_expiry() -> None:
    now = [0.0]
    store = MemoryStore(max_bytes=1000, clock=lambda: now[0])

    async def run() -> None:
        store.put("a", entry(300), 10)
        store.put("b", entry(300), 10)
        assert await store.get("a") is not None  # a is now the most recently used
        store.put("c", entry(300), 10)  # over 1000 bytes with overheads: b goes
        assert await store.get("b") is None
        assert await store.get("a") is not None and await store.get("c") is not None
        assert store.size <= store.max_bytes
        store.put("huge", entry(5000), 10)  # larger than the whole cache: not kept
        assert await store.get("huge") is None
        now[0] = 11.0
        assert await store.get("a") is None, "expired"
        assert store.size == store.entries["c"][1]

    asyncio.run(run())
