"""Fixtures that run real processes on loopback: the mock upstream and `tollway serve`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

CLIENT_KEY = "client-key-0123456789"
LIMITED_KEY = "limited-key-0123456789"
PROVIDER_KEY = "sk-provider-secret-abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            time.sleep(0.1)
            raise RuntimeError(f"process exited with {proc.returncode}:\n{output_of(proc)}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def spawn(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # Own process group: Granian forks workers, and the whole tree must go at teardown.
    proc = subprocess.Popen(
        cmd,
        env=dict(os.environ if env is None else env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _drain(proc)
    return proc


def _drain(proc: subprocess.Popen[bytes]) -> None:
    """Reads a child's output as it comes: an unread pipe fills (~64 KiB of access log) and
    then blocks the child's writes, which would freeze a busy gateway mid-test."""
    chunks: list[bytes] = []
    _OUTPUT[proc.pid] = chunks
    stream = proc.stdout
    if stream is None:
        return

    def pump() -> None:
        with stream:  # closed at EOF (the process tree ended), never left to the collector
            for line in iter(stream.readline, b""):
                chunks.append(line)

    threading.Thread(target=pump, daemon=True).start()


_OUTPUT: dict[int, list[bytes]] = {}


def output_of(proc: subprocess.Popen[bytes]) -> str:
    return b"".join(_OUTPUT.get(proc.pid, [])).decode(errors="replace")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]

    def output(self) -> str:
        """Everything the process printed (stops it first, so nothing is missing)."""
        stop(self.proc)
        time.sleep(0.1)  # the reader thread sees EOF right after the exit
        return output_of(self.proc)


@contextlib.contextmanager
def mock_server(*args: str) -> Iterator[Server]:
    """A `tollway mock-upstream` on a free port (extra CLI flags in `args`), stopped after."""
    port = free_port()
    proc = spawn([sys.executable, "-m", "tollway.mock", "--port", str(port), *args])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", proc)
        yield Server(url, proc)
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def mock_upstream() -> Iterator[Server]:
    with mock_server() as server:
        yield server


class Gateways:
    """Starts `tollway serve` processes from config texts; `close()` stops them all."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Server] = []

    def start(self, config: str, workers: int = 1, env: dict[str, str] | None = None) -> Server:
        path = self.directory / f"gateway-{len(self.started)}.yaml"
        path.write_text(config)
        port = free_port()
        cmd = ["tollway", "serve", "--config", str(path), "--port", str(port)]
        proc = spawn([*cmd, "--workers", str(workers)], {**os.environ, **(env or {})})
        server = Server(f"http://127.0.0.1:{port}", proc)
        self.started.append(server)
        wait_http(f"{server.url}/readyz", proc)
        return server

    def close(self) -> None:
        for s in self.started:
            stop(s.proc)


def gateway_config(mock_url: str, extra: str = "") -> str:
    """The test config: one mock account, a dead account, two keys."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    return f"""
type: gateway-settings
server:
  timeouts: {{connect_ms: 2000, request_ms: 10000}}
  max_body_bytes: 65536
---
type: provider-account
name: mock
provider: openai-compatible
base_url: {mock_url}/v1
api_key: {PROVIDER_KEY}
headers: {{x-account-header: from-config}}
models:
  - {{name: small, model_id: gpt-4o-mini}}
  - gpt-4o
  - text-embedding-3-small
  - mock-hang
  - mock-reset-mid
  - mock-status-400
  - mock-status-401
  - mock-status-429
  - mock-status-503
---
type: provider-account
name: dead
provider: openai-compatible
base_url: {dead}
models: [gpt-4o]
---
type: gateway-keys
keys:
  - name: client
    key: {CLIENT_KEY}
    subject: user:alice
  - name: limited
    key: {LIMITED_KEY}
    subject: team:interns
    allowed_models: ["mock/small", "mock/text-*"]
{extra}"""


GatewayFactory = Callable[..., Server]


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Starts `tollway serve` with a config text; every gateway is stopped at teardown."""
    gateways = Gateways(tmp_path)
    yield gateways.start
    gateways.close()


@pytest.fixture(scope="module")
def module_gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    """Gateways shared by a module's tests (starting one takes about a second)."""
    gateways = Gateways(tmp_path_factory.mktemp("gateways"))
    yield gateways
    gateways.close()


@pytest.fixture(scope="module")
def gateway(mock_upstream: Server, module_gateways: Gateways) -> Server:
    return module_gateways.start(gateway_config(mock_upstream.url))


class RedisServer:
    """A throwaway redis-server that a test can pause, kill and bring back on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        self.proc = spawn([*cmd, "--save", "", "--appendonly", "no"])
        deadline = time.monotonic() + 10
        while not self._pong():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        assert self.proc is not None
        self.signal(signal.SIGKILL)
        self.proc.wait(5)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    server = RedisServer()
    server.start()
    yield server
    if server.proc is not None:
        if server.proc.poll() is None:
            server.signal(signal.SIGCONT)
        stop(server.proc)
