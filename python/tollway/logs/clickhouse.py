"""The ClickHouse request log, over its HTTP interface (for deployments with replicas).

Used from the writer thread and from query threads, so plain blocking `urllib` is fine here:
nothing on the event loop waits on it. Rows go in as one `INSERT ... FORMAT JSONEachRow`.
"""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import msgspec

from tollway.logs.row import COLUMNS, Row, encode_rows

__all__ = ["ClickHouseError", "ClickHouseStore"]


class ClickHouseError(Exception):
    """ClickHouse answered with an error or could not be reached (never carries the URL)."""


class ClickHouseStore:
    rows = True  # as a writer's sink: takes rows (`encode_rows`), in JSONEachRow

    def __init__(self, url: str, table: str = "tollway_requests", timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        self._headers: dict[str, str] = {}
        if parts.username:
            token = f"{parts.username}:{parts.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        self._base = urlunsplit((parts.scheme, netloc, parts.path or "/", "", ""))
        self._query = parts.query
        self.table = table
        self.timeout_s = timeout_s
        self._ready = False

    def _post(self, sql: str, body: bytes = b"", params: dict[str, str] | None = None) -> bytes:
        args = {"query": sql, **{f"param_{k}": v for k, v in (params or {}).items()}}
        qs = "&".join(x for x in (self._query, urlencode(args)) if x)
        req = urllib.request.Request(f"{self._base}?{qs}", data=body, headers=self._headers)  # noqa: S310
        try:
            # The scheme is http(s): the config schema checks clickhouse_url.
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode(errors="replace")
            raise ClickHouseError(f"ClickHouse answered {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise ClickHouseError(f"ClickHouse unreachable ({type(e).__name__})") from None

    def ensure_table(self) -> None:
        if self._ready:
            return
        cols = ", ".join(f"{n} {t}" for n, _, t in COLUMNS)
        self._post(
            f"CREATE TABLE IF NOT EXISTS {self.table} ({cols}) ENGINE = MergeTree "
            "ORDER BY (ts, request_id) PARTITION BY intDiv(ts, 86400000000)"
        )
        self._ready = True

    def insert(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        self.write(encode_rows(rows))

    def write(self, data: bytes) -> None:
        """Appends rows already encoded by `encode_rows`."""
        self.ensure_table()
        self._post(f"INSERT INTO {self.table} FORMAT JSONEachRow", data)

    def ensure_running(self) -> None:
        pass

    def close(self, timeout_s: float) -> None:
        pass  # one HTTP request a batch: nothing is held open

    def query(
        self, sql: str, params: Sequence[Any] = (), named: dict[str, str] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """(column names, rows); `sql` uses ClickHouse `{name:Type}` placeholders."""
        self.ensure_table()
        # 64-bit integers as JSON numbers (ClickHouse quotes them by default).
        settings = " SETTINGS output_format_json_quote_64bit_integers = 0"
        out = msgspec.json.decode(self._post(sql + settings + " FORMAT JSONCompact", params=named))
        names = [m["name"] for m in out.get("meta", [])]
        return names, [tuple(r) for r in out.get("data", [])]

    def retain(self, days: int, body_days: int, now_s: float | None = None) -> tuple[int, int]:
        self.ensure_table()
        now_us = int((time.time() if now_s is None else now_s) * 1e6)
        cutoff = now_us - days * 86_400_000_000
        body_cutoff = now_us - body_days * 86_400_000_000
        # Mutations: applied by ClickHouse in the background; counts are not known here.
        self._post(f"ALTER TABLE {self.table} DELETE WHERE ts < {cutoff}")
        self._post(
            f"ALTER TABLE {self.table} UPDATE request_body = NULL, response_body = NULL "
            f"WHERE ts < {body_cutoff} AND request_body IS NOT NULL"
        )
        return 0, 0
