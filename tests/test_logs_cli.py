"""`tollway logs`: the embedded log from a shell, filtered like the API, as a table or JSON."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tollway.logs.store import EmbeddedStore


def row(rid: str, ts_s: float, model: str, status: int, team: str) -> tuple[object, ...]:
    return (int(ts_s * 1e6), rid, "/v1/chat/completions", "client", "user:alice", model, "",
            model, status, "" if status < 400 else str(status), False, 1, False, 10, 5, 0, 2e-5,
            12.5, 1.0, 0.0, None, None, "[]", json.dumps({"team": team}), "[]", "[]", None,
            None)  # fmt: skip


def logs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tollway", "logs", *args], capture_output=True, text=True, timeout=60)


def test_query_filters_table_json_and_summary(tmp_path: Path) -> None:
    path = tmp_path / "requests.duckdb"
    now = time.time()
    EmbeddedStore(str(path)).insert([
        row("r-1", now - 30, "m/a", 200, "red"),
        row("r-2", now - 20, "m/b", 503, "red"),
        row("r-3", now - 10, "m/a", 200, "blue"),
    ])  # fmt: skip
    out = logs("--path", str(path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["time", "request", "id"]
    assert [ln.split()[1] for ln in lines[1:]] == ["r-1", "r-2", "r-3"]  # oldest first

    out = logs("--path", str(path), "--json", "--model", "m/a", "--metadata", "team=blue")
    got = [json.loads(line) for line in out.stdout.splitlines()]
    assert [g["request_id"] for g in got] == ["r-3"] and got[0]["metadata"] == {"team": "blue"}

    out = logs("--path", str(path), "--json", "--status", "error")
    assert [json.loads(x)["request_id"] for x in out.stdout.splitlines()] == ["r-2"]

    out = logs("--path", str(path), "--summary", "--group-by", "metadata.team", "--json")
    by_team = {json.loads(x)["metadata.team"]: json.loads(x) for x in out.stdout.splitlines()}
    assert by_team["red"]["count"] == 2 and by_team["red"]["errors"] == 1

    bad = logs("--path", str(path), "--limit", "0")
    assert bad.returncode == 2 and "limit" in bad.stderr


def test_the_log_path_comes_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("type: gateway-settings\nrequest_logs: {path: here.duckdb}\n")
    EmbeddedStore(str(tmp_path / "here.duckdb")).insert([row("c-1", time.time(), "m/a", 200, "x")])
    out = logs("--config", str(config), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])["request_id"] == "c-1"
