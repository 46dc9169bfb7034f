"""`tollway logs`: query and tail the embedded request log from a shell (same filters as the
analytics API), as a table or JSON lines."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import msgspec

from tollway.logs.api import LIST_COLUMNS, item_of
from tollway.logs.query import BadParam, Dialect, parse_list, parse_summary, summary_rows
from tollway.logs.settings import LogSettings
from tollway.logs.store import TABLE, EmbeddedStore, StoreBusy

__all__ = ["add_parser"]

# (column, heading, width)
_TABLE = (("time", "time", 23), ("request_id", "request id", 26), ("status", "status", 6),
          ("key_name", "key", 12), ("model", "model", 22), ("target", "target", 22),
          ("input_tokens", "in", 7), ("output_tokens", "out", 7), ("cost", "cost $", 10),
          ("latency_ms", "ms", 9))  # fmt: skip


def add_parser(sub: Any) -> None:
    p = sub.add_parser("logs", help="query or tail the embedded request log")
    p.add_argument("--config", help="config file or directory (default: $TOLLWAY_CONFIG)")
    p.add_argument("--path", help="the log file (default: request_logs.path of the config)")
    for name in ("start", "end", "key", "subject", "model", "target", "status"):
        p.add_argument(f"--{name}")
    p.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--limit", default="20")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.add_argument("-f", "--follow", action="store_true", help="print new requests as they come")
    p.add_argument("--summary", action="store_true", help="totals and percentiles instead")
    p.add_argument("--group-by", help="with --summary: model,target,subject,key,status,metadata.K")
    p.add_argument("--bucket", help="with --summary: 1m, 1h, 1d, ...")
    p.set_defaults(func=run)


def _path(args: argparse.Namespace) -> str:
    if args.path:
        return str(args.path)
    config = args.config or os.environ.get("TOLLWAY_CONFIG")
    if not config:
        raise SystemExit("tollway logs: give --path or --config (or set TOLLWAY_CONFIG)")
    from tollway.engine import ConfigError, compile_engine
    from tollway.logs import resolve_path

    try:
        sections = msgspec.json.decode(compile_engine(config).settings.telemetry_json)
    except ConfigError as e:
        raise SystemExit(f"tollway logs: invalid config {config}: {e.errors[0]}") from None
    settings = LogSettings.from_config(sections.get("request_logs"))
    if settings.backend != "embedded":
        raise SystemExit("tollway logs: the log is in ClickHouse; use /v1/analytics instead")
    return resolve_path(settings.path, config)


def _params(args: argparse.Namespace) -> dict[str, str]:
    params = {n: getattr(args, n) for n in ("start", "end", "key", "subject", "model", "target",
                                            "status") if getattr(args, n)}  # fmt: skip
    for item in args.metadata:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"tollway logs: --metadata wants KEY=VALUE, got '{item}'")
        params[f"metadata.{key}"] = value
    return params


def _print(rows: list[dict[str, Any]], as_json: bool, header: bool) -> None:
    if as_json:
        for r in rows:
            print(msgspec.json.encode(r).decode())
        return
    if header:
        print(" ".join(head.ljust(w) for _, head, w in _TABLE).rstrip())
    for r in rows:
        cells = []
        for name, _, w in _TABLE:
            v = r.get(name)
            text = f"{v:.6f}" if name == "cost" and v is not None else "" if v is None else str(v)
            cells.append(text[:w].ljust(w))
        print(" ".join(cells).rstrip())
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    path = _path(args)
    if not os.path.exists(path):
        print(f"tollway logs: no log at {path} yet", file=sys.stderr)
        return 1
    store = EmbeddedStore(path)
    params = _params(args)
    try:
        if args.summary:
            if args.group_by:
                params["group_by"] = args.group_by
            if args.bucket:
                params["bucket"] = args.bucket
            q = parse_summary(params, Dialect())
            names, raw = store.query(q.sql.replace("{table}", TABLE), q.dialect.params)
            for row in summary_rows(q, names, raw):
                print(msgspec.json.encode(row).decode() if args.json else
                      "  ".join(f"{k}={v}" for k, v in row.items()))  # fmt: skip
            return 0
        lq = parse_list({**params, "limit": args.limit}, LIST_COLUMNS, Dialect())
        names, raw = store.query(lq.sql.replace("{table}", TABLE), lq.dialect.params)
        rows = [item_of(names, r) for r in raw[: lq.limit]][::-1]  # oldest first, like tail
        _print(rows, args.json, header=True)
        last = max((r["ts"] for r in rows), default=int(time.time() * 1e6))
        while args.follow:
            time.sleep(1.0)
            lq = parse_list({**params, "start": str((last + 1) / 1e6), "limit": "1000"},
                            LIST_COLUMNS, Dialect())  # fmt: skip
            names, raw = store.query(lq.sql.replace("{table}", TABLE), lq.dialect.params)
            new = [item_of(names, r) for r in raw][::-1]
            _print(new, args.json, header=False)
            last = max((r["ts"] for r in new), default=last)
    except BadParam as e:
        print(f"tollway logs: {e}", file=sys.stderr)
        return 2
    except StoreBusy:
        print("tollway logs: the log stayed locked by the gateway; try again", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
