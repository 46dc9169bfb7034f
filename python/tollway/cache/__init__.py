"""The opt-in response cache on the request path.

After admission (so a hit still counts against request rate limits), the engine says whether
the request is cached and under which key (`Engine.cache_plan`, in Rust: rule match, header
check, canonical-body hash). A hit replays the stored answer, a stream as a stream, costs $0
and settles no tokens; a miss runs the call with its response captured and stores it when it
ended well (status 200, a complete stream). `x-tfy-cache-status` says hit, miss or bypass.
A config without cache rules, and a request without the header, do none of this.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tollway.asgi import Message, Send
from tollway.cache.store import Count, Entry, MemoryStore, RedisStore, Store
from tollway.errors import GatewayError

if TYPE_CHECKING:
    from tollway.engine import Admission, Runtime
    from tollway.telemetry.observe import RequestLog

__all__ = ["Capture", "Entry", "ResponseCache", "Turn"]

_HIT = (b"x-tfy-cache-status", b"hit")
_MISS = (b"x-tfy-cache-status", b"miss")
_BYPASS = (b"x-tfy-cache-status", b"bypass")


@dataclass(slots=True)
class Turn:
    """One request's dealings with the cache: its plan, and the stored answer on a hit."""

    key: str | None
    ttl_s: int = 0
    rule: str = ""
    hit: Entry | None = None


class ResponseCache:
    """One worker's cache: the store for `gateway-settings.cache`, plus metrics."""

    def __init__(self, store: Store, count: Count | None) -> None:
        self.store = store
        self.count = count
        self.settings: tuple[str, str | None, int, int] | None = None
        # The config it was last checked against (a reload brings a new one).
        self.runtime: Runtime | None = None
        self._closing: set[asyncio.Future[None]] = set()

    @classmethod
    def for_runtime(cls, rt: Runtime, count: Count | None) -> ResponseCache:
        backend, url, max_bytes, timeout_ms = settings = rt.engine.cache_settings
        store: Store
        if backend == "redis" and url is not None:
            store = RedisStore(url, timeout_ms / 1000, count)
        else:
            store = MemoryStore(max_bytes)
        cache = cls(store, count)
        cache.settings = settings
        return cache

    async def begin(
        self, rt: Runtime, adm: Admission, header: bytes | None, api: str, body: bytes
    ) -> Turn:
        """The request's plan and, when stored, its answer (a bad header is a 400)."""
        try:
            text = header.decode() if header is not None else None
            plan = rt.engine.cache_plan(adm, text, api, body)
        except (ValueError, UnicodeDecodeError) as e:
            message = f"x-tfy-cache-config {e}"
            raise GatewayError.bad_request(message, "x-tfy-cache-config") from None
        if plan is None:
            return Turn(None)
        key, ttl_s, rule = plan
        turn = Turn(key, ttl_s, rule or "header")
        turn.hit = await self.store.get(key)
        hit = turn.hit is not None
        self._count(f"llm_gateway_cache_{'hits' if hit else 'misses'}_total", turn.rule)
        return turn

    def _count(self, name: str, rule: str, value: float = 1.0) -> None:
        if self.count is not None:
            self.count(name, (rule,), value)

    async def replay(
        self, turn: Turn, send: Send, headers: list[tuple[bytes, bytes]], log: RequestLog
    ) -> None:
        """Sends a hit: the stored body messages, as they were sent the first time."""
        entry = turn.hit
        assert entry is not None
        headers = [
            (b"content-type", entry.content_type),
            (b"x-tfy-resolved-model", entry.resolved),
            _HIT,
            *headers,
        ]
        if entry.content_type == b"text/event-stream":
            headers.append((b"cache-control", b"no-cache"))
        log.status = 200
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk in entry.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self._count("llm_gateway_cache_saved_cost_total", turn.rule, entry.cost_usd)

    def keep(self, turn: Turn, capture: Capture, log: RequestLog) -> None:
        """Keeps a miss's answer when it ended well."""
        if turn.key is None or capture.status != 200 or log.error_type or log.status != 200:
            return
        chunks = tuple(capture.chunks)
        entry = Entry(capture.content_type, capture.resolved, chunks, log.cost_usd, capture.size)
        self.store.put(turn.key, entry, turn.ttl_s)

    async def close(self) -> None:
        await self.store.close()

    def retire(self) -> None:
        """Closes the store in the background (a reload replaced it)."""
        task = asyncio.ensure_future(self.store.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


class Capture:
    """Wraps ASGI `send` for a cached request: adds `x-tfy-cache-status` and, on a miss,
    keeps the body messages for the store."""

    __slots__ = (
        "cache",
        "chunks",
        "content_type",
        "record",
        "resolved",
        "send",
        "size",
        "status",
        "tag",
        "turn",
    )

    def __init__(self, send: Send, turn: Turn, cache: ResponseCache) -> None:
        self.send = send
        self.turn = turn
        self.cache = cache
        self.record = turn.key is not None
        self.tag = _MISS if self.record else _BYPASS
        self.status = 0
        self.content_type = b"application/json"
        self.resolved = b""
        self.chunks: list[bytes] = []
        self.size = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            for name, value in message["headers"]:
                if name == b"content-type":
                    self.content_type = value
                elif name == b"x-tfy-resolved-model":
                    self.resolved = value
            message = {**message, "headers": [*message["headers"], self.tag]}
        elif self.record and message["type"] == "http.response.body":
            body = message.get("body", b"")
            if body:
                self.chunks.append(body)
                self.size += len(body)
        await self.send(message)

    def keep(self, log: RequestLog) -> None:
        """Stores the answer (see `ResponseCache.keep`)."""
        self.cache.keep(self.turn, self, log)
