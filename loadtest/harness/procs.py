"""Start, watch and stop the harness's processes: each in its own process group, pinned to CPUs."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psutil

MB = 1024 * 1024


class HarnessError(RuntimeError):
    """A process did not start or a tool is missing; the message says what to do."""


def free_port() -> int:
    # Bind to port 0 on loopback and let the kernel choose; closed before use, which is racy
    # only against other programs grabbing the same port in the next milliseconds.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_ids(spec: str | None) -> set[str]:
    """The CPUs of a taskset list such as "0", "1-3" or "0,2"."""
    ids: set[str] = set()
    for part in (spec or "").split(","):
        lo, _, hi = part.partition("-")
        if lo:
            ids.update(str(i) for i in range(int(lo), int(hi or lo) + 1))
    return ids


def pinned(argv: Sequence[str], cpus: str | None) -> list[str]:
    """Prefix argv with `taskset -c CPUS` (children inherit the affinity, e.g. Granian workers)."""
    if cpus is None or shutil.which("taskset") is None:
        return list(argv)
    return ["taskset", "-c", cpus, *argv]


def keep_off_sut(load_cpus: str | None) -> None:
    """Pin this process to the load side's CPUs, where the machine has them."""
    wanted = {int(c) for c in cpu_ids(load_cpus)}
    try:
        if wanted and wanted <= os.sched_getaffinity(0):
            os.sched_setaffinity(0, wanted)
    except (AttributeError, OSError):  # not Linux, or a CPU set the container forbids
        pass


CPU_DMA_LATENCY = Path("/dev/cpu_dma_latency")


@contextlib.contextmanager
def cpus_awake(enabled: bool) -> Iterator[str]:
    """Hold the CPUs out of their sleep states (a PM QoS request of 0 us, what tuned's
    latency-performance profile and cyclictest make) while the block runs; yields what was done.

    An idle vCPU that halts is woken by its host, which on some VMs takes a millisecond at the
    tail (Firecracker guests here run haltpoll with polling off). The request is the process's
    own: the kernel drops it when the file closes, so nothing outlives the harness."""
    if not enabled:
        yield "as the machine is"
        return
    try:
        fd = os.open(CPU_DMA_LATENCY, os.O_WRONLY)
    except OSError as exc:
        yield f"as the machine is ({CPU_DMA_LATENCY}: {exc.strerror})"
        return
    try:
        os.write(fd, struct.pack("i", 0))
        yield f"awake ({CPU_DMA_LATENCY} held at 0 us)"
    finally:
        os.close(fd)


@dataclass(frozen=True)
class RssSample:
    total_mb: float  # the whole process tree; shared pages are counted once per process
    max_process_mb: float  # the largest single process, i.e. the per-worker figure
    processes: int
    # Background helpers that are not workers (the request log's ingester): their largest,
    # kept out of the per-worker figure and reported beside it.
    helper_mb: float = 0.0


# Command-line markers of the tree's helper processes.
HELPERS = ("tollway.logs.ingest",)


@dataclass(eq=False)  # identity: a Service is one running process tree
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    # Work the service has taken in and not yet finished in the background (the gateway's
    # request-log spool); `settle` waits for it to reach 0.
    queued: Callable[[], int] | None = None
    _procs: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tree(self) -> list[psutil.Process]:
        """The process and its descendants, kept between calls so cpu_percent has a baseline."""
        try:
            root = psutil.Process(self.proc.pid)
            found = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        current = {p.pid: self._procs.setdefault(p.pid, p) for p in found}
        self._procs = current
        return list(current.values())

    def rss(self) -> RssSample:
        sizes: list[int] = []
        helpers: list[int] = [0]
        for proc in self.tree():
            try:
                rss = proc.memory_info().rss
                helper = any(h in " ".join(proc.cmdline()) for h in HELPERS)
            except psutil.Error:
                continue
            (helpers if helper else sizes).append(rss)
        total = sum(sizes) + sum(helpers)
        return RssSample(total / MB, max(sizes, default=0) / MB, len(sizes) + len(helpers) - 1,
                         max(helpers) / MB)  # fmt: skip

    def settle(self, quiet_pct: float, timeout_s: float, step_s: float = 0.5) -> float:
        """Waits until nothing is queued and the tree's CPU stays under quiet_pct for two steps
        in a row: the work a saturation run left behind is done. Gives up after timeout_s.
        The seconds waited."""
        started = time.monotonic()
        self.cpu_percent()  # baseline
        quiet = 0
        while quiet < 2 and time.monotonic() - started < timeout_s:
            time.sleep(step_s)
            idle = self.cpu_percent() < quiet_pct and not (self.queued and self.queued())
            quiet = quiet + 1 if idle else 0
        return time.monotonic() - started

    def cpu_percent(self) -> float:
        """CPU% of the tree since the previous call (100 = one CPU busy)."""
        total = 0.0
        for proc in self.tree():
            try:
                total += proc.cpu_percent(None)
            except psutil.Error:
                continue
        return total

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 5.0) -> None:
        if self.proc.poll() is not None:
            return
        # Granian waits for open streams on SIGTERM; escalate to SIGKILL on the whole group.
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # Workers may outlive the Granian main process briefly; leave no orphan holding a port.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


class Services:
    """Owns every process the harness starts; stops them all on exit, error or Ctrl-C."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._running: list[Service] = []

    def __enter__(self) -> Services:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        cpus: str | None,
        env: dict[str, str] | None = None,
        ready_path: str = "/healthz",
        timeout_s: float = 30.0,
    ) -> Service:
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                pinned(argv, cpus),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # own process group: one killpg stops workers too
            )
        service = Service(name, proc, port, log)
        self._running.append(service)
        try:
            wait_ready(service, ready_path, timeout_s)
        except HarnessError:
            self.stop(service)
            raise
        return service

    def stop(self, service: Service) -> None:
        service.stop()
        if service in self._running:
            self._running.remove(service)

    def stop_all(self) -> None:
        for service in reversed(list(self._running)):
            self.stop(service)


def wait_ready(service: Service, path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise HarnessError(
                f"{service.name} exited with code {service.proc.returncode} before it was ready;"
                f" log {service.log}:\n{service.log_tail()}"
            )
        try:
            with urllib.request.urlopen(service.url + path, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise HarnessError(
        f"{service.name} not ready at {service.url}{path} after {timeout_s:.0f} s;"
        f" log {service.log}:\n{service.log_tail()}"
    )


@dataclass
class CpuReport:
    service_mean: dict[str, float]
    service_max: dict[str, float]
    cpu_mean: dict[int, float]  # per-CPU utilisation, 0-100

    def as_dict(self) -> dict[str, object]:
        return {
            "service_mean_pct": {k: round(v, 1) for k, v in self.service_mean.items()},
            "service_max_pct": {k: round(v, 1) for k, v in self.service_max.items()},
            "cpu_mean_pct": {str(k): round(v, 1) for k, v in self.cpu_mean.items()},
        }


class CpuSampler:
    """Samples CPU% of some services and of each CPU in a thread while a load run is going."""

    def __init__(self, services: Sequence[Service], interval_s: float = 0.5) -> None:
        self.services = list(services)
        self.interval_s = interval_s
        self._samples: dict[str, list[float]] = {s.name: [] for s in self.services}
        self._cpu: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> CpuSampler:
        for service in self.services:
            service.cpu_percent()  # baseline
        psutil.cpu_percent(None, percpu=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        # Skip the first interval's samples, which straddle the load generator's start-up.
        while not self._stop.wait(self.interval_s):
            for service in self.services:
                self._samples[service.name].append(service.cpu_percent())
            self._cpu.append(psutil.cpu_percent(None, percpu=True))

    def report(self) -> CpuReport:
        usable = {k: v[1:] or v for k, v in self._samples.items()}
        cpu_rows = self._cpu[1:] or self._cpu
        ncpu = len(cpu_rows[0]) if cpu_rows else 0
        return CpuReport(
            {k: sum(v) / len(v) if v else 0.0 for k, v in usable.items()},
            {k: max(v, default=0.0) for k, v in usable.items()},
            {i: sum(row[i] for row in cpu_rows) / len(cpu_rows) for i in range(ncpu)},
        )
