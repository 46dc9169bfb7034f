"""Analytics queries: request parameters in, SQL for the embedded store or ClickHouse out.

Every parameter is checked here and a bad one raises `BadParam` naming it; values reach the
SQL only as bound parameters (column names come from fixed tables, never from the client).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["BadParam", "Dialect", "ListQuery", "SummaryQuery", "parse_list", "parse_summary"]

_FILTERS = {"key": "key_name", "subject": "subject", "model": "model", "target": "target"}
_GROUPS = {"model": "model", "target": "target", "subject": "subject", "key": "key_name",
           "status": "status"}  # fmt: skip
_META_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_BUCKET = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_LIMIT = 1000


class BadParam(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class Dialect:
    """How one store spells the few things DuckDB and ClickHouse write differently."""

    clickhouse: bool = False
    params: list[Any] = field(default_factory=list)
    named: dict[str, str] = field(default_factory=dict)

    def ph(self, value: Any, kind: str = "String") -> str:
        if not self.clickhouse:
            self.params.append(value)
            return "?"
        name = f"p{len(self.named)}"
        self.named[name] = str(value)
        return f"{{{name}:{kind}}}"

    def meta(self, key: str) -> str:
        if self.clickhouse:
            return f"JSONExtractString(metadata, {self.ph(key)})"
        return f"json_extract_string(metadata, {self.ph(f'$.{key}')})"

    def bucket(self, seconds: int) -> str:
        us = seconds * 1_000_000
        return f"intDiv(ts, {us}) * {us}" if self.clickhouse else f"(ts // {us}) * {us}"

    def quantiles(self, col: str) -> str:
        if self.clickhouse:
            return f"quantiles(0.5, 0.95, 0.99)({col})"
        return f"quantile_cont({col}, [0.5, 0.95, 0.99])"


def _time(params: Mapping[str, str], name: str) -> int | None:
    """µs since the epoch from ISO 8601 or Unix seconds."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(float(raw) * 1e6)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadParam(name, f"'{name}' must be an ISO 8601 time or Unix seconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1e6)


def _where(params: Mapping[str, str], d: Dialect) -> list[str]:
    conds: list[str] = []
    start, end = _time(params, "start"), _time(params, "end")
    if start is not None:
        conds.append(f"ts >= {d.ph(start, 'Int64')}")
    if end is not None:
        conds.append(f"ts < {d.ph(end, 'Int64')}")
    for name, col in _FILTERS.items():
        if params.get(name):
            conds.append(f"{col} = {d.ph(params[name])}")
    status = params.get("status")
    if status:
        if status in ("error", "ok"):
            conds.append("status >= 400" if status == "error" else "status < 400")
        elif status.isdigit() and len(status) == 3:
            conds.append(f"status = {d.ph(int(status), 'Int32')}")
        else:
            raise BadParam("status", "'status' must be an HTTP status code, 'ok' or 'error'")
    for name, value in params.items():
        if name.startswith("metadata."):
            key = name[len("metadata.") :]
            if not _META_KEY.match(key):
                raise BadParam(name, f"'{name}': metadata keys are letters, digits, '_-.'")
            conds.append(f"{d.meta(key)} = {d.ph(value)}")
    return conds


def _known(params: Mapping[str, str], allowed: set[str]) -> None:
    for name in params:
        if name not in allowed and not name.startswith("metadata."):
            raise BadParam(name, f"unknown parameter '{name}'")


_COMMON = {"start", "end", "key", "subject", "model", "target", "status", "format"}


def _format(params: Mapping[str, str]) -> str:
    fmt = params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise BadParam("format", "'format' must be json or csv")
    return fmt


@dataclass
class ListQuery:
    sql: str
    dialect: Dialect
    limit: int
    fmt: str


def encode_cursor(ts: int, request_id: str) -> str:
    return base64.urlsafe_b64encode(f"{ts}:{request_id}".encode()).decode().rstrip("=")


def parse_list(params: Mapping[str, str], columns: str, d: Dialect) -> ListQuery:
    _known(params, _COMMON | {"limit", "cursor"})
    fmt = _format(params)
    raw = params.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadParam("limit", f"'limit' must be a whole number from 1 to {MAX_LIMIT}")
    limit = int(raw)
    conds = _where(params, d)
    cursor = params.get("cursor")
    if cursor:
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            ts_text, _, rid = text.partition(":")
            ts = int(ts_text)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise BadParam("cursor", "'cursor' is not a cursor this API returned") from None
        a, b, c = d.ph(ts, "Int64"), d.ph(ts, "Int64"), d.ph(rid)
        conds.append(f"(ts < {a} OR (ts = {b} AND request_id < {c}))")
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    # Column names are fixed here; client values are bound parameters only.
    order = f"ORDER BY ts DESC, request_id DESC LIMIT {limit + 1}"
    sql = f"SELECT {columns} FROM {{table}}{where} {order}"  # noqa: S608
    return ListQuery(sql, d, limit, fmt)


@dataclass
class SummaryQuery:
    sql: str
    dialect: Dialect
    groups: list[str]
    bucketed: bool
    fmt: str


def parse_summary(params: Mapping[str, str], d: Dialect) -> SummaryQuery:
    _known(params, _COMMON | {"group_by", "bucket"})
    fmt = _format(params)
    groups: list[str] = []
    exprs: list[str] = []
    raw_bucket = params.get("bucket")
    if raw_bucket:
        m = _BUCKET.match(raw_bucket)
        if m is None or int(m.group(1)) == 0:
            raise BadParam("bucket", "'bucket' must be a duration such as 60s, 5m, 1h or 1d")
        exprs.append(f"{d.bucket(int(m.group(1)) * _UNIT_S[m.group(2)])} AS bucket")
    for name in filter(None, (params.get("group_by") or "").split(",")):
        name = name.strip()
        if name in _GROUPS:
            exprs.append(f"{_GROUPS[name]} AS g{len(groups)}")
        elif name.startswith("metadata.") and _META_KEY.match(name[9:]):
            exprs.append(f"{d.meta(name[9:])} AS g{len(groups)}")
        else:
            raise BadParam(
                "group_by",
                f"'group_by' cannot group by '{name}' (model, target, subject, key, status, "
                "metadata.<key>)",
            )
        groups.append(name)
    conds = _where(params, d)
    keys = [e.rsplit(" AS ", 1)[1] for e in exprs]
    select = ", ".join(
        [*exprs, "count(*) AS count", "sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors",
         "sum(input_tokens) AS input_tokens", "sum(output_tokens) AS output_tokens",
         "sum(cached_tokens) AS cached_tokens", "sum(cost) AS cost",
         f"{d.quantiles('latency_ms')} AS latency", f"{d.quantiles('ttft_ms')} AS ttft"]
    )  # fmt: skip
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    tail = f" GROUP BY {', '.join(keys)} ORDER BY {', '.join(keys)}" if keys else ""
    sql = f"SELECT {select} FROM {{table}}{where}{tail}"  # noqa: S608 (bound parameters)
    return SummaryQuery(sql, d, groups, bool(raw_bucket), fmt)


def iso(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).isoformat(timespec="milliseconds")


def summary_rows(
    q: SummaryQuery, names: list[str], rows: list[tuple[Any, ...]]
) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        rec = dict(zip(names, r, strict=True))
        item: dict[str, Any] = {}
        if q.bucketed:
            item["bucket"] = iso(int(rec["bucket"]))
        for i, g in enumerate(q.groups):
            item[g] = rec[f"g{i}"]
        item.update(
            count=int(rec["count"]),
            errors=int(rec["errors"] or 0),
            input_tokens=int(rec["input_tokens"] or 0),
            output_tokens=int(rec["output_tokens"] or 0),
            cached_tokens=int(rec["cached_tokens"] or 0),
        )
        item["tokens"] = item["input_tokens"] + item["output_tokens"]
        item["cost"] = round(float(rec["cost"] or 0.0), 10)
        for name in ("latency", "ttft"):
            qs = rec[name] or [None, None, None]
            for p, v in zip(("p50", "p95", "p99"), qs, strict=True):
                ok = v is not None and v == v  # NaN from an empty group: no figure
                item[f"{name}_{p}_ms"] = round(float(v), 3) if ok else None
        out.append(item)
    return out
