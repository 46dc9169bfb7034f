"""Alerts on budget and rate-limit crossings, decided off the request path.

`observe` is a telemetry sink (event loop, after settle): for a request under a budget rule
an alerts rule watches, it reads the entity's spend from the engine and notes each threshold
now crossed; a refused request counts towards its rate-limit rule's refusals this minute. A
background task claims each crossing in the shared event store (so it is sent once for all
workers) and delivers it to the rule's channels, retrying with backoff; outcomes are counted
in `llm_gateway_alerts_total{channel,result}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp

from tollway.engine import Engine, budget_spend
from tollway.logs.channels import ChannelError, send
from tollway.logs.events import Crossing, EventStore
from tollway.telemetry.metrics import MetricsStore
from tollway.telemetry.record import Record, decode_records

__all__ = ["Alerts"]

_log = logging.getLogger("tollway.alerts")
_QUEUE = 10_000


def _usd(x: float) -> str:
    """Dollars with the digits small amounts need: 12.50, 0.015, 0.000103."""
    return f"{x:.2f}" if x >= 1 else f"{x:.3g}"


class Alerts:
    def __init__(
        self,
        config: dict[str, Any],
        events: EventStore,
        metrics: MetricsStore | None = None,
        retries: tuple[float, float, int] = (0.5, 8.0, 5),
    ) -> None:
        self.channels: dict[str, dict[str, Any]] = {
            c["name"]: c for c in config.get("channels", [])
        }
        self.budget_rules: dict[str, list[dict[str, Any]]] = {}
        self.rate_rules: dict[str, list[dict[str, Any]]] = {}
        for rule in config.get("rules", []):
            if rule["kind"] == "budget":
                self.budget_rules.setdefault(rule["budget"], []).append(rule)
            else:
                self.rate_rules.setdefault(rule["rate_limit"], []).append(rule)
        self.events = events
        self.metrics = metrics
        self.retries = retries
        # Set by the gateway: the engine of the current config (reload swaps it).
        self.engine: Callable[[], Engine] | None = None
        self._pending: deque[Crossing] = deque()
        self._refusals: dict[tuple[str, int], int] = {}
        self._seen: set[tuple[str, str, float, int]] = set()
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self.dropped = 0

    def _count(self, channel: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.add("llm_gateway_alerts_total", (channel, result))

    # -- telemetry sink (event loop) ----------------------------------------------------------

    def observe_encoded(self, encoded: bytes, _count: int = 0, _logged: int = 0) -> None:
        """The telemetry sink: a slice of records as one MessagePack array."""
        self.observe(decode_records(encoded))

    def observe(self, records: list[Record]) -> None:
        for rec in records:
            if rec.budget is not None and rec.budget[0] in self.budget_rules:
                self._budget(rec, rec.budget[0])
            if rec.rate_limit is not None and rec.rate_limit[1] == "blocked":
                rule = rec.rate_limit[0]
                if rule in self.rate_rules:
                    key = (rule, rec.start_ns // 60_000_000_000)
                    self._refusals[key] = self._refusals.get(key, 0) + 1
                    self._wake.set()

    def _budget(self, rec: Record, rule_id: str) -> None:
        if self.engine is None or rec.budget is None or rec.budget[1] != "allowed":
            return
        got = budget_spend(
            self.engine(), rule_id, rec.subject, rec.model, list(rec.metadata.items())
        )
        if got is None:
            return
        entity, period, spent, limit = got
        entity = entity or "all"  # a budget without budget_applies_per: one shared entity
        percent = spent / limit * 100 if limit > 0 else float("inf")
        for alert in self.budget_rules[rule_id]:
            for threshold in sorted(alert.get("thresholds") or [100]):
                seen = (alert["id"], entity, float(threshold), period)
                if percent < threshold or seen in self._seen:
                    continue
                self._seen.add(seen)
                message = (
                    f"Budget '{rule_id}' for {entity} is at {percent:.0f}% "
                    f"(${_usd(spent)} of ${_usd(limit)} this period; threshold {threshold:g}%)"
                )
                self._push(Crossing(kind="budget", alert=alert["id"], rule=rule_id,
                                    entity=entity, threshold=float(threshold), period=period,
                                    value=round(percent, 2), message=message, spent_usd=spent,
                                    limit_usd=limit))  # fmt: skip

    def _push(self, c: Crossing) -> None:
        if len(self._pending) >= _QUEUE:
            self.dropped += 1
            self._count("", "dropped")
            return
        self._pending.append(c)
        self._wake.set()

    # -- lifespan -----------------------------------------------------------------------------

    def start(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._main = asyncio.create_task(self._run(), name="alerts")

    async def stop(self) -> None:
        tasks = [t for t in (self._main, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    # -- background ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            self._wake.clear()
            try:
                await self._refusal_crossings()
                while self._pending:
                    await self._dispatch(self._pending.popleft())
            except Exception:  # a bad event must not end alerting for the process
                _log.exception("alerts: processing failed")

    async def _refusal_crossings(self) -> None:
        counts, self._refusals = self._refusals, {}
        for (rule, minute), n in counts.items():
            total = await asyncio.to_thread(self.events.add_refusals, rule, minute, n)
            for alert in self.rate_rules[rule]:
                limit = alert["refusals_per_minute"]
                seen = (alert["id"], "all", float(limit), minute)
                if total < limit or seen in self._seen:
                    continue
                self._seen.add(seen)
                at = time.strftime("%H:%M", time.gmtime(minute * 60))
                message = (f"Rate limit '{rule}' refused {total} requests in the minute from "
                           f"{at} UTC (alert at {limit} per minute)")  # fmt: skip
                self._push(Crossing(kind="rate_limit", alert=alert["id"], rule=rule,
                                    entity="all", threshold=float(limit), period=minute,
                                    value=float(total), message=message))  # fmt: skip

    async def _dispatch(self, c: Crossing) -> None:
        event_id = await asyncio.to_thread(self.events.claim, c)
        if event_id is None:
            return  # another worker saw it first and sends it
        _log.info("alert %s: %s", c.alert, c.message)
        rules = self.budget_rules.get(c.rule, []) + self.rate_rules.get(c.rule, [])
        notify: list[str] = next((r["notify"] for r in rules if r["id"] == c.alert), [])
        for name in notify:
            task = asyncio.create_task(self._deliver(name, c, event_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, name: str, c: Crossing, event_id: int) -> None:
        assert self._session is not None
        delay, cap, tries = self.retries
        result = "failed"
        for attempt in range(tries):
            try:
                await send(self.channels[name], c, event_id, self._session)
                result = "sent"
                break
            except ChannelError as e:
                _log.warning("alert %s to channel %s: %s (try %d)", c.alert, name, e, attempt + 1)
                if not e.retry:
                    break
            if attempt + 1 < tries:
                await asyncio.sleep(delay)
                delay = min(delay * 2, cap)
        self._count(name, result)
        await asyncio.to_thread(self.events.delivered, event_id, name, result)
