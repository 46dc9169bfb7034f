"""The horizontal deployment: two `tollway serve` replicas behind real HAProxy running the repo's
`deploy/haproxy.cfg`, through a rolling restart under load, and a rate limit shared over Redis."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import CLIENT_KEY, Server, free_port, spawn, stop, wait_http

from tollway.engine import compile_engine

REPO = Path(__file__).resolve().parent.parent
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
BODY = {"model": "m/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


def need(binary: str) -> None:
    """CI installs haproxy and redis-server (.ci/run): missing there is a failure, not a skip."""
    if shutil.which(binary) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{binary} is not installed")
        pytest.skip(f"{binary} is not installed (apt-get install {binary})")


def loopback_haproxy_cfg(text: str, port: int, stats_port: int, servers: dict[str, int]) -> str:
    """The repo's haproxy.cfg with only its addresses moved to loopback for a test.

    - `bind :8080` (the gateway frontend) becomes `bind 127.0.0.1:<port>`, `bind :8404` (stats)
      `bind 127.0.0.1:<stats_port>`;
    - each `server <name> <host:port> ...` points at `127.0.0.1:<servers[name]>`, without its
      Docker DNS options (`resolvers`, `init-addr`), and the `resolvers` section is dropped;
    - every other line (options, checks, retries, timeouts) is kept as it is.
    """
    binds = {":8080": f"127.0.0.1:{port}", ":8404": f"127.0.0.1:{stats_port}"}
    out: list[str] = []
    seen: set[str] = set()
    in_resolvers = False
    for line in text.splitlines():
        if line and not line[0].isspace():  # a section header (or a top-level comment)
            in_resolvers = line.startswith("resolvers ")
        if in_resolvers:
            continue
        if m := re.match(r"(\s*bind\s+)(\S+)(.*)", line):
            line = m[1] + binds[m[2]] + m[3]
        elif m := re.match(r"(\s*server\s+)(\S+)\s+\S+(.*)", line):
            seen.add(m[2])
            rest = re.sub(r"\s+(resolvers|init-addr)\s+\S+", "", m[3])
            line = f"{m[1]}{m[2]} 127.0.0.1:{servers[m[2]]}{rest}"
        out.append(line)
    assert seen == set(servers), f"deploy/haproxy.cfg names servers {seen}"
    return "\n".join(out) + "\n"


def config(mock: Server, extra: str = "") -> str:
    """A replica's config: a 2 s drain window (the test's rolling restart fits in seconds)."""
    return f"""type: gateway-settings
server: {{drain_delay_s: 2, shutdown_grace_s: 3}}
{extra}
---
type: provider-account
name: m
provider: openai-compatible
base_url: {mock.url}/v1
models: [gpt-4o-mini]
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
"""


@dataclass
class Replica:
    name: str
    port: int
    config: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = ["tollway", "serve", "--config", str(self.config), "--port", str(self.port)]
        self.proc = spawn([*cmd, "--workers", "1"])
        wait_http(f"http://127.0.0.1:{self.port}/readyz", self.proc)

    def sigterm_and_wait(self) -> int:
        """SIGTERM to the supervisor only, as an orchestrator sends it; its exit code."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(20)


@dataclass
class Haproxy:
    url: str
    stats_url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def servers(self) -> dict[str, dict[str, str]]:
        """Per-server rows of the stats CSV (status, stot = requests sent to it, ...)."""
        text = httpx.get(f"{self.stats_url};csv", timeout=2).text.lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r for r in rows if r["pxname"] == "tollway" and "-" in r["svname"]}

    def wait_status(self, name: str, status: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (now := self.servers()[name]["status"]) != status:
            assert time.monotonic() < deadline, f"{name} stayed {now}, expected {status}"
            time.sleep(0.1)

    def served(self) -> dict[str, int]:
        return {name: int(row["stot"]) for name, row in self.servers().items()}


@pytest.fixture
def deployment(
    mock_upstream: Server, tmp_path: Path
) -> Iterator[Callable[[str], tuple[Haproxy, list[Replica]]]]:
    """Starts two replicas with a config and HAProxy in front; stops all of them at teardown."""
    need("haproxy")
    replicas: list[Replica] = []
    procs: list[subprocess.Popen[bytes]] = []

    def start(extra: str = "") -> tuple[Haproxy, list[Replica]]:
        cfg = tmp_path / "gateway.yaml"
        cfg.write_text(config(mock_upstream, extra))
        for name in ("tollway-1", "tollway-2"):
            replicas.append(Replica(name, free_port(), cfg))
            replicas[-1].start()
        port, stats_port = free_port(), free_port()
        servers = {r.name: r.port for r in replicas}
        lb_cfg = tmp_path / "haproxy.cfg"
        lb_cfg.write_text(loopback_haproxy_cfg(HAPROXY_CFG.read_text(), port, stats_port, servers))
        log = tmp_path / "haproxy.log"
        with log.open("wb") as out:  # a file, not a pipe: it logs every request
            proc = subprocess.Popen(
                ["haproxy", "-f", str(lb_cfg), "-db"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs.append(proc)
        lb = Haproxy(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{stats_port}/stats", proc, log)
        wait_http(f"{lb.url}/readyz", proc)
        for r in replicas:
            lb.wait_status(r.name, "UP")
        return lb, replicas

    yield start
    for r in replicas:
        if r.proc is not None:
            stop(r.proc)
    for p in procs:
        stop(p)


@dataclass
class Load:
    """Steady load through the balancer from a thread: one chat request every 1/rate s."""

    url: str
    rate: float = 30.0
    results: list[int | str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=AUTH, timeout=10) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                try:
                    r = client.post("/v1/chat/completions", json=BODY)
                    ok = r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
                    self.results.append(200 if ok else f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as e:
                    self.results.append(f"{type(e).__name__}: {e}")
                next_at += 1 / self.rate
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(15)


def test_rolling_restart_behind_haproxy_loses_no_request(
    deployment: Callable[[str], tuple[Haproxy, list[Replica]]],
) -> None:
    lb, replicas = deployment("")
    served: list[dict[str, int]] = [lb.served()]
    with Load(lb.url) as load:
        time.sleep(1.5)
        served.append(lb.served())
        for r in replicas:
            assert r.sigterm_and_wait() == 0, f"{r.name} did not exit 0 after SIGTERM"
            r.start()  # same port, as a replacement pod or container would
            lb.wait_status(r.name, "UP")
        served.append(lb.served())
        time.sleep(1.5)
        served.append(lb.served())

    failures = [r for r in load.results if r != 200]
    assert not failures, f"{len(failures)} of {len(load.results)} requests failed: {failures[:5]}"
    assert len(load.results) > 200  # ~30/s for the whole rolling restart
    before = {n: served[1][n] - served[0][n] for n in served[0]}
    after = {n: served[3][n] - served[2][n] for n in served[0]}
    assert all(before.values()) and all(after.values()), (before, after)


def redis_server() -> tuple[int, subprocess.Popen[bytes]]:
    need("redis-server")
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    proc = spawn([*cmd, "--save", "", "--appendonly", "no"])
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return port, proc
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            stop(proc)
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)


def test_shared_limit_holds_across_replicas_behind_haproxy(
    deployment: Callable[[str], tuple[Haproxy, list[Replica]]],
) -> None:
    redis_port, redis = redis_server()
    try:
        lb, _ = deployment(
            f"state: {{backend: redis, redis_url: 'redis://127.0.0.1:{redis_port}', "
            "sync_interval_ms: 100}\n---\n"
            "type: gateway-rate-limiting-config\n"
            "rules: [{id: shared, when: {models: [m/gpt-4o-mini]}, limit_to: 20, "
            "unit: requests_per_minute}]"
        )
        start = lb.served()
        statuses: list[int] = []
        with httpx.Client(base_url=lb.url, headers=AUTH, timeout=10) as client:
            # 25/s: a few requests per sync interval, as steady traffic would send them.
            for _ in range(60):
                time.sleep(0.04)
                r = client.post("/v1/chat/completions", json=BODY)
                if r.status_code == 429:
                    assert r.json()["error"]["code"] == "rate_limit_exceeded"
                statuses.append(r.status_code)
        served = {n: c - start[n] for n, c in lb.served().items()}
        assert all(c >= 20 for c in served.values()), served  # both replicas had their share
        ok = statuses.count(200)
        assert set(statuses) == {200, 429}, statuses
        # One bucket of 20 for the whole deployment, not 20 per replica (40).
        assert 18 <= ok <= 24, f"{ok} of 60 admitted: {statuses}"
    finally:
        stop(redis)


def seconds(value: str) -> float:
    """`50s`, `250ms`, `1m` (compose and HAProxy durations) in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m)", value)
    assert m, value
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60}[m[2]]


def test_deploy_files_keep_the_drain_budget(tmp_path: Path) -> None:
    """What docs/deploy.md promises: the orchestrator's kill comes after a full drain, the
    balancer drops a draining replica inside its drain window, the probes hit the right paths."""
    deploy = REPO / "deploy"
    # The compose replicas' config.
    compose_gw = compile_engine(deploy / "gateway.yaml", env={}).settings
    compose = yaml.safe_load((deploy / "docker-compose.yml").read_text())
    for name in ("tollway-1", "tollway-2"):
        grace = seconds(compose["services"][name]["stop_grace_period"])
        assert grace > compose_gw.drain_delay_s + compose_gw.shutdown_grace_s
    # HAProxy: a replica that says 503 is out after inter + (fall - 1) * fastinter.
    lb = HAPROXY_CFG.read_text()
    assert "option httpchk GET /readyz" in lb and "http-check expect status 200" in lb
    opts = dict(re.findall(r"\b(inter|fastinter|fall)\s+(\w+)", lb))
    down_after = seconds(opts["inter"]) + (int(opts["fall"]) - 1) * seconds(opts["fastinter"])
    assert down_after < compose_gw.drain_delay_s
    assert down_after < 2  # the 2 s drain window of the rolling-restart test above

    # Kubernetes: the ConfigMap's config (its secrets come from the environment).
    docs = {
        d["kind"]: d
        for f in (deploy / "k8s").glob("*.yaml")
        for d in yaml.safe_load_all(f.read_text())
        if d
    }
    (tmp_path / "gateway.yaml").write_text(docs["ConfigMap"]["data"]["gateway.yaml"])
    env = {k: str(v) for k, v in docs["Secret"]["stringData"].items()}
    k8s_gw = compile_engine(tmp_path / "gateway.yaml", env=env).settings
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > k8s_gw.drain_delay_s + k8s_gw.shutdown_grace_s
    (container,) = pod["containers"]
    assert "lifecycle" not in container  # no preStop: the app drains by itself
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    live = container["livenessProbe"]
    assert live["httpGet"]["path"] == "/healthz"
    assert live["periodSeconds"] * live["failureThreshold"] > k8s_gw.shutdown_grace_s
    assert docs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert docs["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
