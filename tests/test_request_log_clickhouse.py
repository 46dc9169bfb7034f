"""`request_logs.backend: clickhouse`: the gateway writes its rows to ClickHouse over the HTTP
interface, and the analytics API reads them back with ClickHouse SQL.

Debian's clickhouse-server is 18.16 (2018; no Bool, no LowCardinality in JSON inserts, no
parameterised queries), too old to be useful, so the server here is ClickHouse's own engine
from PyPI (`chdb`) behind a minimal HTTP front that does what the HTTP interface does with a
request: the `query` parameter, then the body, run as one statement, `param_*` bound.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import openai
import pytest
from conftest import CLIENT_KEY, Gateways, Server, gateway_config

ADMIN_KEY = "admin-key-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


class ChdbHttp:
    """ClickHouse's HTTP interface over an embedded chdb session, on loopback."""

    def __init__(self, path: Path) -> None:
        session_mod = pytest.importorskip("chdb.session")
        self.session = session_mod.Session(str(path))
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                args = dict(parse_qsl(urlsplit(self.path).query))
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                sql = args.pop("query", "") + ("\n" + body.decode() if body else "")
                params = {k[6:]: v for k, v in args.items() if k.startswith("param_")}
                fmt = "CSV"
                if sql.endswith(" FORMAT JSONCompact"):
                    sql, fmt = sql[: -len(" FORMAT JSONCompact")], "JSONCompact"
                try:
                    with outer.lock:
                        out = outer.session.query(sql, fmt, params=params or None)
                    data, status = bytes(out.bytes()) if out is not None else b"", 200
                except Exception as e:
                    data, status = str(e).encode(), 500
                self.send_response(status)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def rows(self, sql: str) -> list[list[Any]]:
        with self.lock:
            out = self.session.query(sql, "JSONCompact")
        data: list[list[Any]] = json.loads(bytes(out.bytes()))["data"]
        return data


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbHttp]:
    ch = ChdbHttp(tmp_path_factory.mktemp("chdb"))
    yield ch
    ch.server.shutdown()
    ch.server.server_close()


def test_clickhouse_receives_the_rows_and_answers_the_api(
    mock_upstream: Server, module_gateways: Gateways, clickhouse: ChdbHttp
) -> None:
    extra = f"""---
type: gateway-keys
keys:
  - {{name: ops, key: {ADMIN_KEY}, subject: "user:ops", admin: true}}
"""
    section = (f"request_logs: {{backend: clickhouse, clickhouse_url: '{clickhouse.url}', "
               "flush_interval_ms: 100}\n")  # fmt: skip
    config = gateway_config(mock_upstream.url, extra).replace(
        "  max_body_bytes: 65536\n", "  max_body_bytes: 65536\n" + section
    )
    gw = module_gateways.start(config, workers=2)
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    run = f"ch-{time.time_ns()}"
    sent: dict[str, tuple[int, int, int]] = {}
    for i in range(4):
        raw = client.chat.completions.with_raw_response.create(
            model="mock/small", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-request-id": f"{run}-{i}", "x-tfy-metadata": '{"team": "ml"}'},
        )  # fmt: skip
        u = raw.parse().usage
        assert u is not None
        sent[f"{run}-{i}"] = (200, u.prompt_tokens, u.completion_tokens)
    bad = {"model": "mock/mock-status-503", "messages": [{"role": "user", "content": "x"}]}
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "x-request-id": f"{run}-bad"}
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers=headers, json=bad)
    sent[f"{run}-bad"] = (r.status_code, 0, 0)

    query = (f"SELECT request_id, status, input_tokens, output_tokens, cost, metadata "  # noqa: S608
             f"FROM tollway_requests WHERE startsWith(request_id, '{run}')")  # fmt: skip
    rows: list[list[Any]] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            rows = clickhouse.rows(query)
        except Exception:
            rows = []  # the table appears with the first insert
        if len(rows) >= len(sent):
            break
        time.sleep(0.2)
    got = {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}
    assert got == sent and len(rows) == len(sent)
    assert all(float(r[4]) > 0 for r in rows if r[0] != f"{run}-bad")

    # The analytics API on the ClickHouse backend: list, one request, summary.
    page = httpx.get(f"{gw.url}/v1/analytics/requests", params={"metadata.team": "ml"},
                     headers=ADMIN).json()  # fmt: skip
    assert {r["request_id"] for r in page["data"]} >= {f"{run}-{i}" for i in range(4)}
    one = httpx.get(f"{gw.url}/v1/analytics/requests/{run}-0", headers=ADMIN).json()
    assert one["attempts"][0]["target"] == "mock/small" and one["metadata"] == {"team": "ml"}
    summary = httpx.get(f"{gw.url}/v1/analytics/summary",
                        params={"group_by": "metadata.team", "bucket": "1h"},
                        headers=ADMIN).json()["data"]  # fmt: skip
    ml = [s for s in summary if s["metadata.team"] == "ml"]
    assert sum(s["count"] for s in ml) >= 4
    assert sum(s["input_tokens"] for s in ml) >= sum(v[1] for v in sent.values())
    assert ml[0]["latency_p50_ms"] is not None
