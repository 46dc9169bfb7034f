"""The request log end to end: a mixed run against `tollway serve --workers 2`, read back
through the analytics API with an admin key."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import CLIENT_KEY, Gateways, Server, gateway_config, mock_server

from tollway.logs.store import EmbeddedStore

ADMIN_KEY = "admin-key-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CLIENT = {"authorization": f"Bearer {CLIENT_KEY}"}
MESSAGES = [{"role": "user", "content": "Say hello"}]


def log_config(mock_url: str, slow_url: str, log_path: Path, settings: str = "") -> str:
    extra = f"""---
type: provider-account
name: slow
provider: openai-compatible
base_url: {slow_url}/v1
models: [gpt-4o-mini]
---
type: gateway-keys
keys:
  - {{name: ops, key: {ADMIN_KEY}, subject: "user:ops", admin: true}}
---
type: gateway-load-balancing-config
rules:
  - id: fallback-rule
    type: priority-based-routing
    when: {{models: [assistant]}}
    load_balance_targets:
      - {{target: dead/gpt-4o, priority: 0, retry_config: {{attempts: 0}}}}
      - {{target: mock/gpt-4o, priority: 1}}
---
type: gateway-rate-limiting-config
rules:
  - id: capped
    when: {{metadata: {{project: capped}}}}
    limit_to: 1
    unit: requests_per_hour
---
type: gateway-guardrails-config
guardrails:
  - name: words
    kind: regex
    patterns: [{{name: FORBIDDEN, pattern: "forbidden-word"}}]
rules:
  - id: block-words
    when: {{}}
    llm_input_guardrails: [words]
"""
    section = (
        f"request_logs: {{path: {log_path}, flush_interval_ms: 100, "
        f"exclude_request_data: false{settings}}}\n"
    )
    config = gateway_config(mock_url, extra)
    return config.replace("  max_body_bytes: 65536\n", "  max_body_bytes: 65536\n" + section)


@pytest.fixture(scope="module")
def slow_mock() -> Iterator[Server]:
    with mock_server("--itl-ms", "40", "--tokens", "60") as server:
        yield server


@pytest.fixture(scope="module")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("log") / "requests.duckdb"


@pytest.fixture(scope="module")
def gw(
    mock_upstream: Server, slow_mock: Server, log_path: Path, module_gateways: Gateways
) -> Server:
    config = log_config(mock_upstream.url, slow_mock.url, log_path)
    return module_gateways.start(config, workers=2)


def logged(gw: Server, want: set[str], timeout: float = 15.0, **params: str) -> dict[str, Any]:
    """The logged requests by id, once every id in `want` is there."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(f"{gw.url}/v1/analytics/requests", params={"limit": "1000", **params},
                      headers=ADMIN)  # fmt: skip
        assert r.status_code == 200, r.text
        rows = r.json()["data"]
        if want <= {row["request_id"] for row in rows}:
            break
        time.sleep(0.2)
    ids = [row["request_id"] for row in rows]
    assert len(ids) == len(set(ids)), "a request was logged twice"
    return {row["request_id"]: row for row in rows}


def post(gw: Server, rid: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    h = {**CLIENT, "x-request-id": rid, **headers}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=h, timeout=30)


def test_a_mixed_run_is_logged_once_per_request_with_status_tokens_and_cost(
    gw: Server, log_path: Path
) -> None:
    run = f"mix-{time.time_ns()}"
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    usage: dict[str, tuple[int, int]] = {}
    statuses: dict[str, int] = {}
    for i in range(3):
        rid = f"{run}-ok-{i}"
        raw = client.chat.completions.with_raw_response.create(
            model="mock/small", messages=MESSAGES, extra_headers={"x-request-id": rid}
        )
        u = raw.parse().usage
        assert u is not None
        usage[rid], statuses[rid] = (u.prompt_tokens, u.completion_tokens), 200
    rid = f"{run}-fallback"
    r = post(gw, rid, {"model": "assistant", "messages": MESSAGES})
    assert r.status_code == 200, r.text
    usage[rid] = (r.json()["usage"]["prompt_tokens"], r.json()["usage"]["completion_tokens"])
    statuses[rid] = 200
    for i in range(3):  # each worker admits one per hour: at least one of three is refused
        rid = f"{run}-capped-{i}"
        meta = json.dumps({"project": "capped"})
        r = post(gw, rid, {"model": "mock/small", "messages": MESSAGES}, **{"x-tfy-metadata": meta})
        statuses[rid] = r.status_code
        if r.status_code == 200:
            usage[rid] = (
                r.json()["usage"]["prompt_tokens"],
                r.json()["usage"]["completion_tokens"],
            )
    assert 429 in statuses.values()
    rid = f"{run}-blocked"
    r = post(
        gw,
        rid,
        {"model": "mock/small", "messages": [{"role": "user", "content": "a forbidden-word"}]},
    )
    assert r.status_code == 400, r.text
    statuses[rid] = 400
    rid = f"{run}-stream"
    stream = client.chat.completions.create(
        model="mock/small", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True}, extra_headers={"x-request-id": rid},
    )  # fmt: skip
    chunks = list(stream)
    u = chunks[-1].usage
    assert u is not None
    usage[rid], statuses[rid] = (u.prompt_tokens, u.completion_tokens), 200
    rid = f"{run}-left"
    body = {"model": "slow/gpt-4o-mini", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body,
                      headers={**CLIENT, "x-request-id": rid}) as resp:  # fmt: skip
        got = 0
        for line in resp.iter_lines():
            got += line.startswith("data:")
            if got >= 5:
                break  # the client leaves mid-stream
    statuses[rid] = 499
    out = f"{run}-out-meta"
    meta = json.dumps({"tfy_log_request": "false"})
    assert post(gw, out, {"model": "mock/small", "messages": MESSAGES},
                **{"x-tfy-metadata": meta}).status_code == 200  # fmt: skip
    out2 = f"{run}-out-header"
    assert post(gw, out2, {"model": "mock/small", "messages": MESSAGES},
                **{"x-tfy-logging-config": '{"enabled": false}'}).status_code == 200  # fmt: skip

    rows = logged(gw, set(statuses))
    mine = {k: v for k, v in rows.items() if k.startswith(run)}
    assert set(mine) == set(statuses), "every request once, the opted-out ones not at all"
    for rid, status in statuses.items():
        row = mine[rid]
        assert row["status"] == status, (rid, row)
        assert row["key_name"] == "client" and row["subject"] == "user:alice"
        if rid in usage:
            assert (row["input_tokens"], row["output_tokens"]) == usage[rid], rid
            assert row["cost"] > 0, rid
        elif status in (400, 429):
            assert row["output_tokens"] == 0 and row["cost"] == 0, rid
    fb = mine[f"{run}-fallback"]
    assert fb["fallback"] is True and fb["attempt_count"] == 2 and fb["target"] == "mock/gpt-4o"
    assert [a["target"] for a in fb["attempts"]] == ["dead/gpt-4o", "mock/gpt-4o"]
    assert fb["virtual_model"] == "assistant" and "fallback-rule" in fb["rule_ids"]
    assert mine[f"{run}-blocked"]["guardrails"][0]["result"] == "block"
    st = mine[f"{run}-stream"]
    assert st["stream"] is True and st["ttft_ms"] is not None
    left = mine[f"{run}-left"]
    assert left["output_tokens"] > 0 and left["cost"] > 0, "a client that left is still charged"

    # One request with its attempts and bodies (request data is not excluded here).
    one = httpx.get(f"{gw.url}/v1/analytics/requests/{run}-fallback", headers=ADMIN).json()
    assert len(one["attempts"]) == 2 and "Say hello" in one["request_body"]
    assert one["response_body"]

    # The summary's totals equal the sum of the answers' usage.
    start = str(min(r["ts"] for r in mine.values()) / 1e6)
    s = httpx.get(f"{gw.url}/v1/analytics/summary", params={"start": start, "status": "200"},
                  headers=ADMIN).json()["data"][0]  # fmt: skip
    ok = [rid for rid in usage if statuses[rid] == 200]
    assert s["count"] == len(ok)
    assert s["input_tokens"] == sum(usage[rid][0] for rid in ok)
    assert s["output_tokens"] == sum(usage[rid][1] for rid in ok)
    assert s["cost"] == pytest.approx(sum(mine[rid]["cost"] for rid in ok))
    assert s["latency_p50_ms"] > 0


def test_summary_groups_buckets_and_csv(gw: Server) -> None:
    tag = f"g{time.time_ns()}"
    for team, n in (("red", 2), ("blue", 1)):
        for i in range(n):
            meta = json.dumps({"team": team, "run": tag})
            assert post(gw, f"{tag}-{team}-{i}", {"model": "mock/small", "messages": MESSAGES},
                        **{"x-tfy-metadata": meta}).status_code == 200  # fmt: skip
    logged(gw, {f"{tag}-red-0", f"{tag}-red-1", f"{tag}-blue-0"})
    params = {"group_by": "metadata.team,model", "bucket": "1h", "metadata.run": tag}
    data = httpx.get(f"{gw.url}/v1/analytics/summary", params=params, headers=ADMIN).json()["data"]
    by_team = {d["metadata.team"]: d for d in data}
    assert by_team["red"]["count"] == 2 and by_team["blue"]["count"] == 1
    assert by_team["red"]["model"] == "mock/small" and by_team["red"]["bucket"].endswith("+00:00")
    r = httpx.get(f"{gw.url}/v1/analytics/summary", params={**params, "format": "csv"},
                  headers=ADMIN)  # fmt: skip
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert sorted(int(x["count"]) for x in rows) == [1, 2]
    r = httpx.get(f"{gw.url}/v1/analytics/requests",
                  params={"metadata.run": tag, "format": "csv"}, headers=ADMIN)  # fmt: skip
    assert len(list(csv.DictReader(io.StringIO(r.text)))) == 3


def test_pages_follow_the_cursor_without_gaps_or_repeats(gw: Server) -> None:
    tag = f"p{time.time_ns()}"
    for i in range(5):
        meta = json.dumps({"run": tag})
        post(gw, f"{tag}-{i}", {"model": "mock/small", "messages": MESSAGES},
             **{"x-tfy-metadata": meta})  # fmt: skip
    logged(gw, {f"{tag}-{i}" for i in range(5)})
    seen: list[str] = []
    params = {"metadata.run": tag, "limit": "2"}
    for _ in range(5):
        page = httpx.get(f"{gw.url}/v1/analytics/requests", params=params, headers=ADMIN).json()
        seen += [r["request_id"] for r in page["data"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert sorted(seen) == sorted(f"{tag}-{i}" for i in range(5))


@pytest.mark.parametrize(
    ("query", "param"),
    [("limit=5000", "limit"), ("start=yesterday", "start"), ("group_by=colour", "group_by"),
     ("bucket=3x", "bucket"), ("status=teapot", "status"), ("format=xml", "format"),
     ("cursor=%25%25", "cursor"), ("colour=red", "colour")],
)  # fmt: skip
def test_bad_parameters_are_400_naming_the_parameter(gw: Server, query: str, param: str) -> None:
    path = "summary" if param in ("group_by", "bucket") else "requests"
    r = httpx.get(f"{gw.url}/v1/analytics/{path}?{query}", headers=ADMIN)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_only_admin_keys_read_the_log(gw: Server) -> None:
    for path in ("requests", "summary", "requests/x", "events"):
        assert httpx.get(f"{gw.url}/v1/analytics/{path}", headers=CLIENT).status_code == 403
        assert httpx.get(f"{gw.url}/v1/analytics/{path}").status_code == 401
    assert httpx.get(f"{gw.url}/v1/analytics/requests/nope", headers=ADMIN).status_code == 404


def test_retention_deletes_old_rows_and_older_bodies(
    mock_upstream: Server, slow_mock: Server, tmp_path: Path, module_gateways: Gateways
) -> None:
    path = tmp_path / "old.duckdb"
    store = EmbeddedStore(str(path))
    now = time.time()
    template = ("", "/v1/chat/completions", "client", "user:alice", "mock/small", "", "mock/small",
                200, "", False, 1, False, 1, 1, 0, 0.1, 1.0, 0.1, 0.0, None, None, "[]", "{}",
                "[]", "[]", "request", "response")  # fmt: skip
    rows = [
        (int((now - 40 * 86400) * 1e6), "ancient", *template[1:]),
        (int((now - 10 * 86400) * 1e6), "old-bodies", *template[1:]),
        (int((now - 3600) * 1e6), "recent", *template[1:]),
    ]
    store.insert(rows)
    settings = ", retention_days: 30, body_retention_days: 7"
    gw = module_gateways.start(log_config(mock_upstream.url, slow_mock.url, path, settings))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ids = logged(gw, set())
        if "ancient" not in ids:
            break
        time.sleep(0.2)
    assert "ancient" not in ids and {"old-bodies", "recent"} <= set(ids)
    old = httpx.get(f"{gw.url}/v1/analytics/requests/old-bodies", headers=ADMIN).json()
    recent = httpx.get(f"{gw.url}/v1/analytics/requests/recent", headers=ADMIN).json()
    assert old["request_body"] is None and old["response_body"] is None
    assert recent["request_body"] == "request"


def test_check_config_names_bad_log_and_alert_fields(tmp_path: Path) -> None:
    import subprocess

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "type: gateway-settings\n"
        "request_logs: {backend: clickhouse, retention_days: 0, colour: red}\n"
        "---\n"
        "type: gateway-keys\n"
        "keys: [{name: k, key: key-0123456789, subject: 'user:u', admin: 'yes'}]\n"
        "---\n"
        "type: gateway-alerts-config\n"
        "channels: [{name: ops, kind: pager}]\n"
        "rules: [{id: r, kind: budget, budget: nope, thresholds: [80], notify: [ops, mail]}]\n"
    )
    r = subprocess.run(["tollway", "check-config", str(bad)], capture_output=True, text=True,
                       timeout=30)  # fmt: skip
    assert r.returncode == 1
    for path in ("request_logs.colour", "request_logs.clickhouse_url",
                 "request_logs.retention_days", "keys[0].admin", "channels[0].kind",
                 "rules[0].budget", "rules[0].notify[1]"):  # fmt: skip
        assert path in r.stdout, (path, r.stdout)
