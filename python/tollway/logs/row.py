"""A telemetry `Record` as one request-log row: the columns every store writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from tollway.telemetry.record import Record

__all__ = ["COLUMNS", "JSON_COLUMNS", "Row", "encode_rows", "logged", "row_of"]

# (name, DuckDB type, ClickHouse type). `ts` is the request start in µs since the epoch.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("ts", "BIGINT", "Int64"),
    ("request_id", "VARCHAR", "String"),
    ("route", "VARCHAR", "LowCardinality(String)"),
    ("key_name", "VARCHAR", "LowCardinality(String)"),
    ("subject", "VARCHAR", "String"),
    ("model", "VARCHAR", "LowCardinality(String)"),
    ("virtual_model", "VARCHAR", "LowCardinality(String)"),
    ("target", "VARCHAR", "LowCardinality(String)"),
    ("status", "INTEGER", "Int32"),
    ("error_type", "VARCHAR", "LowCardinality(String)"),
    ("stream", "BOOLEAN", "Bool"),
    ("attempt_count", "INTEGER", "Int32"),
    ("fallback", "BOOLEAN", "Bool"),
    ("input_tokens", "BIGINT", "Int64"),
    ("output_tokens", "BIGINT", "Int64"),
    ("cached_tokens", "BIGINT", "Int64"),
    ("cost", "DOUBLE", "Float64"),
    ("latency_ms", "DOUBLE", "Float64"),
    ("gateway_ms", "DOUBLE", "Float64"),
    ("guardrails_ms", "DOUBLE", "Float64"),
    ("ttft_ms", "DOUBLE", "Nullable(Float64)"),
    ("itl_ms", "DOUBLE", "Nullable(Float64)"),
    ("rule_ids", "VARCHAR", "String"),
    ("metadata", "VARCHAR", "String"),
    ("attempts", "VARCHAR", "String"),
    ("guardrails", "VARCHAR", "String"),
    ("request_body", "VARCHAR", "Nullable(String)"),
    ("response_body", "VARCHAR", "Nullable(String)"),
)
NAMES = tuple(c[0] for c in COLUMNS)
# Stored as JSON text; decoded when a request is read back.
JSON_COLUMNS = frozenset({"rule_ids", "metadata", "attempts", "guardrails"})

Row = tuple[Any, ...]
_encoder = msgspec.json.Encoder()
_encode = _encoder.encode
# A row as a JSON object (what DuckDB's read_json and ClickHouse's JSONEachRow read).
_Named: Any = msgspec.defstruct("_Named", [(n, Any) for n in NAMES])


def encode_rows(rows: Sequence[Row]) -> bytes:
    """Rows as newline-delimited JSON objects, ~1.5 µs a row."""
    return _encoder.encode_lines([_Named(*r) for r in rows])


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def logged(rec: Record) -> bool:
    """Whether a request goes into the log (not kept out by its metadata or header)."""
    return rec.log is not None and rec.log.enabled


def row_of(rec: Record) -> Row | None:
    """The row for one request, or None when it is kept out of the log."""
    if not logged(rec):
        return None
    part = rec.log
    assert part is not None
    attempts = []
    upstream_ns = 0
    final = None
    for a in rec.attempts:
        upstream_ns += a.end_ns - a.start_ns
        attempts.append(
            {
                "attempt": a.attempt,
                "target": a.target,
                "status": a.status,
                "error_type": a.error_type,
                "fallback_reason": a.fallback_reason,
                "latency_ms": _ms(a.end_ns - a.start_ns),
            }
        )
        final = a
    for t in rec.tools:  # an MCP request: its tool calls are its attempts
        upstream_ns += t.end_ns - t.start_ns
        attempts.append(
            {
                "attempt": len(attempts) + 1,
                "target": f"{t.server}/{t.tool}" if t.tool else t.server,
                "method": t.method,
                "error_type": t.error_type,
                "latency_ms": _ms(t.end_ns - t.start_ns),
            }
        )
    guard_ns = 0
    guardrails = "[]"
    if rec.guardrails:
        guard_ns = sum(g.end_ns - g.start_ns for g in rec.guardrails)
        guardrails = _encode(
            [{"name": g.name, "phase": g.phase, "result": g.result, "categories": g.categories,
              "latency_ms": _ms(g.end_ns - g.start_ns)} for g in rec.guardrails]
        ).decode()  # fmt: skip
    total_ns = rec.end_ns - rec.start_ns
    return (
        rec.start_ns // 1000,
        rec.request_id,
        rec.route,
        rec.key_name,
        rec.subject,
        rec.model,
        rec.model if rec.routing_rule else "",
        final.target if final is not None else attempts[-1]["target"] if attempts else "",
        rec.status,
        # An upstream refusal passed on as-is names its status (e.g. "400") through the attempt.
        rec.error_type
        or (final.error_type if final is not None and rec.status >= 400 else "")
        or next((t.error_type for t in rec.tools if t.error_type), ""),
        part.stream,
        len(attempts),
        any(a.fallback_reason for a in rec.attempts),
        part.input_tokens,
        part.output_tokens,
        part.cached_tokens,
        part.cost_usd,
        _ms(total_ns),
        _ms(max(total_ns - upstream_ns, 0)),
        _ms(guard_ns),
        final.ttft_ms if final is not None else None,
        final.itl_mean_ms if final is not None else None,
        _encode(rec.rule_ids).decode() if rec.rule_ids else "[]",
        _encode(rec.metadata).decode() if rec.metadata else "{}",
        _encode(attempts).decode(),
        guardrails,
        part.request_body,
        part.response_body,
    )
