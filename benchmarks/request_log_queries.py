"""Fills the embedded request log with N rows and times the analytics API's queries on it.

    python benchmarks/request_log_queries.py --rows 1000000 [--path /tmp/bench.duckdb]

Each query runs as the API runs it (parameters -> SQL -> a fresh session on the file),
three times; the table shows the best and the worst. Rows are spread over 30 days, 8 models,
40 keys, 5 teams (metadata), 5% errors, a third streamed (with TTFT). It also times the
writer's path: 10 batches of 10,000 rows through `EmbeddedStore.insert` (CSV + read_csv).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tollway.logs.api import LIST_COLUMNS
from tollway.logs.query import Dialect, parse_list, parse_summary
from tollway.logs.store import TABLE, EmbeddedStore

DAY_US = 86_400_000_000


def fill(store: EmbeddedStore, rows: int, now_us: int) -> None:
    span = 30 * DAY_US
    with store.session() as con:
        con.execute(
            f"""INSERT INTO {TABLE} SELECT
            {now_us - span} + (i * {span // max(rows, 1)}) AS ts,
            'req-' || i, '/v1/chat/completions', 'key-' || (i % 40), 'user:u' || (i % 300),
            'model-' || (i % 8), '', 'acct/model-' || (i % 8),
            CASE WHEN i % 20 = 0 THEN 500 ELSE 200 END, CASE WHEN i % 20 = 0 THEN '500' ELSE '' END,
            i % 3 = 0, 1, false, 100 + i % 500, 20 + i % 300, 0,
            (100 + i % 500) * 1.5e-7 + (20 + i % 300) * 6e-7,
            exp(4 + random() * 2), 0.3 + random(), 0.0,
            CASE WHEN i % 3 = 0 THEN exp(3 + random()) END, CASE WHEN i % 3 = 0 THEN 12.5 END,
            '[]', '{{"team":"team-' || (i % 5) || '","project":"p' || (i % 50) || '"}}',
            '[]', '[]', NULL, NULL
            FROM range({rows}) t(i)"""  # noqa: S608
        )


QUERIES: list[tuple[str, str, dict[str, str]]] = [
    ("list: latest 100", "list", {"limit": "100"}),
    ("list: model + status=error, 100", "list", {"model": "model-4", "status": "error"}),
    ("list: metadata.team, last day", "list", {"metadata.team": "team-2", "start": "-1d"}),
    ("list: page 2 (cursor)", "cursor", {"limit": "100"}),
    ("summary: totals, all rows", "summary", {}),
    ("summary: by model, all rows", "summary", {"group_by": "model"}),
    ("summary: by metadata.team, 1d buckets", "summary",
     {"group_by": "metadata.team", "bucket": "1d"}),
    ("summary: by key + status, last 7 days", "summary",
     {"group_by": "key,status", "start": "-7d"}),
    ("summary: by model, 1h buckets, last day", "summary",
     {"group_by": "model", "bucket": "1h", "start": "-1d"}),
]  # fmt: skip


def run_query(store: EmbeddedStore, kind: str, params: dict[str, str], now_s: float) -> int:
    params = dict(params)
    if params.get("start", "").startswith("-"):
        params["start"] = str(now_s - int(params["start"][1:-1]) * 86400)
    if kind == "summary":
        q = parse_summary(params, Dialect())
        sql, args = q.sql, q.dialect.params
    else:
        lq = parse_list(params, LIST_COLUMNS, Dialect())
        sql, args = lq.sql, lq.dialect.params
    _, rows = store.query(sql.replace("{table}", TABLE), args)
    if kind == "cursor":  # the next page, as a client following next_cursor would ask
        from tollway.logs.query import encode_cursor

        last = rows[-2]
        lq = parse_list({**params, "cursor": encode_cursor(last[0], last[1])}, LIST_COLUMNS,
                        Dialect())  # fmt: skip
        _, rows = store.query(lq.sql.replace("{table}", TABLE), lq.dialect.params)
    return len(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--path", default=None)
    args = ap.parse_args()
    path = args.path or os.path.join(tempfile.mkdtemp(), "bench.duckdb")
    if os.path.exists(path):
        os.unlink(path)
    store = EmbeddedStore(path)
    now_s = time.time()
    t = time.perf_counter()
    fill(store, args.rows, int(now_s * 1e6))
    size = Path(path).stat().st_size / 1e6
    print(f"filled {args.rows:,} rows in {time.perf_counter() - t:.1f} s ({size:.0f} MB)")
    print(f"{'query':48} {'rows':>6} {'best ms':>9} {'worst ms':>9}")
    for label, kind, params in QUERIES:
        times = []
        n = 0
        for _ in range(3):
            t = time.perf_counter()
            n = run_query(store, kind, params, now_s)
            times.append((time.perf_counter() - t) * 1000)
        print(f"{label:48} {n:>6} {min(times):>9.1f} {max(times):>9.1f}")
    row = ("", "/v1/chat/completions", "key", "user:u", "m", "", "a/m", 200, "", False, 1,
           False, 100, 20, 0, 1e-5, 50.0, 0.5, 0.0, None, None, "[]", '{"team":"t"}', "[]",
           "[]", None, None)  # fmt: skip
    batch = [(int(now_s * 1e6) + i, f"w{i}", *row[1:]) for i in range(10_000)]
    cpu, t = time.process_time(), time.perf_counter()
    for _ in range(10):
        store.insert(batch)
    took, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(f"writer: 10 batches of 10,000 rows: {took / 10 * 1000:.0f} ms a batch (incl. the "
          f"session), {cpu / 100_000 * 1e6:.1f} us CPU a row (all threads)")  # fmt: skip


if __name__ == "__main__":
    main()
