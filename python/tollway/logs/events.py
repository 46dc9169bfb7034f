"""Budget and rate-limit crossings, shared by every worker in one small SQLite file.

A crossing is claimed by inserting it under a unique key (rule, entity, threshold, period):
the one worker whose insert lands sends its alerts, so each crossing is sent once however
many workers saw it. Refusals per minute are summed here across workers the same way.
SQLite (WAL, busy timeout) suits this: a few writes per crossing, from several processes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from tollway.logs.query import BadParam

__all__ = ["Crossing", "EventStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, rule TEXT NOT NULL,
  alert TEXT NOT NULL, entity TEXT NOT NULL, threshold REAL NOT NULL, period INTEGER NOT NULL,
  value REAL NOT NULL, message TEXT NOT NULL, deliveries TEXT NOT NULL DEFAULT '{}',
  UNIQUE (alert, entity, threshold, period));
CREATE TABLE IF NOT EXISTS refusals (
  rule TEXT NOT NULL, minute INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (rule, minute));
"""


class Crossing(msgspec.Struct, frozen=True, kw_only=True):
    """One threshold crossed: `kind` budget|rate_limit, `alert` the alerts rule id, `rule`
    the budget or rate-limit rule, `value` percent of budget or refusals in the minute."""

    kind: str
    alert: str
    rule: str
    entity: str
    threshold: float
    period: int
    value: float
    message: str
    spent_usd: float | None = None
    limit_usd: float | None = None


class EventStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._con is None:
            con = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA busy_timeout=10000")
            con.executescript(_SCHEMA)
            self._con = con
        return self._con

    def claim(self, c: Crossing) -> int | None:
        """The new event's id, or None when another worker (or this one) claimed it first."""
        with self._lock, self._db() as con:
            cur = con.execute(
                "INSERT OR IGNORE INTO events (ts, kind, rule, alert, entity, threshold, period, "
                "value, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), c.kind, c.rule, c.alert, c.entity, c.threshold, c.period, c.value,
                 c.message),
            )  # fmt: skip
            return cur.lastrowid if cur.rowcount == 1 else None

    def add_refusals(self, rule: str, minute: int, n: int) -> int:
        """Adds this worker's refusals of `rule` in `minute`; the total over all workers."""
        with self._lock, self._db() as con:
            con.execute(
                "INSERT INTO refusals (rule, minute, n) VALUES (?, ?, ?) "
                "ON CONFLICT (rule, minute) DO UPDATE SET n = n + excluded.n",
                (rule, minute, n),
            )
            con.execute("DELETE FROM refusals WHERE minute < ?", (minute - 60,))
            row = con.execute(
                "SELECT n FROM refusals WHERE rule = ? AND minute = ?", (rule, minute)
            ).fetchone()
            return int(row[0]) if row else n

    def delivered(self, event_id: int, channel: str, result: str) -> None:
        with self._lock, self._db() as con:
            con.execute(
                "UPDATE events SET deliveries = json_set(deliveries, '$.' || json_quote(?), ?) "
                "WHERE id = ?",
                (channel, result, event_id),
            )

    def list(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """Newest first; `start`/`end` (Unix seconds), `kind`, `limit` (default 100)."""
        conds: list[str] = []
        args: list[Any] = []
        for name, op in (("start", ">="), ("end", "<")):
            if params.get(name):
                try:
                    args.append(float(params[name]))
                except ValueError:
                    raise BadParam(name, f"'{name}' must be Unix seconds") from None
                conds.append(f"ts {op} ?")
        if params.get("kind"):
            conds.append("kind = ?")
            args.append(params["kind"])
        raw = params.get("limit") or "100"
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise BadParam("limit", "'limit' must be a whole number from 1 to 1000")
        limit = int(raw)
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        with self._lock:
            cur = self._db().execute(
                f"SELECT id, ts, kind, alert, rule, entity, threshold, period, value, message, "  # noqa: S608
                f"deliveries FROM events {where} ORDER BY id DESC LIMIT ?",
                (*args, limit),
            )
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        out = []
        for r in rows:
            item = dict(zip(names, r, strict=True))
            item["deliveries"] = msgspec.json.decode(item["deliveries"])
            item["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(item["ts"]))
            out.append(item)
        return out
