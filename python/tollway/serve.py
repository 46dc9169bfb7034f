"""`tollway serve`: a small supervisor around Granian that drains gracefully on SIGTERM.

SIGTERM: every worker's `/readyz` turns 503 at once (a marker file they check), the listener
keeps serving for `drain_delay_s` so the load balancer deregisters the instance, then Granian
gets SIGTERM: it stops accepting, lets requests and streams in flight finish within
`shutdown_grace_s`, runs the ASGI lifespan shutdown (telemetry flush) and exits; so do we,
with 0. SIGINT (Ctrl-C) skips the drain delay. Granian respawns a worker that crashes.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

from tollway.engine import Settings

__all__ = ["DRAIN_FILE_ENV", "METRICS_DIR_ENV", "granian_command", "supervise"]

DRAIN_FILE_ENV = "TOLLWAY_DRAIN_FILE"
# Each worker writes its metric totals here; a scrape of any worker sums them all.
METRICS_DIR_ENV = "TOLLWAY_METRICS_DIR"
log = logging.getLogger("tollway.serve")


def granian_command(settings: Settings, host: str, port: int, workers: int) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--factory",
        "--loop",
        "uvloop",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--http",
        settings.http,
        "--respawn-failed-workers",
        # Without a kill timeout Granian waits for open streams for ever on shutdown; the
        # extra 5 s leave the lifespan shutdown (telemetry flush) its bounded wait.
        "--workers-kill-timeout",
        str(max(1, settings.shutdown_grace_s) + 5),
        # Granian's own metrics port (9090) would clash with ours; ours is /metrics.
        "--no-metrics",
        "--no-access-log",
        "--no-ws",
        # The request head must fit Granian's HTTP/1 read buffer: a larger one is a 431.
        "--http1-buffer-size",
        str(settings.max_header_bytes),
        "--http2-max-headers-size",
        str(settings.max_header_bytes),
    ]
    if settings.backpressure:
        cmd += ["--backpressure", str(settings.backpressure)]
    if not settings.keep_alive:
        cmd.append("--no-http1-keep-alive")
    return [*cmd, "tollway.app:create_app"]


def supervise(config: Path, settings: Settings, host: str, port: int, workers: int) -> int:
    """Runs Granian until it exits or a signal asks us to stop; returns the exit code."""
    # In memory, not on disk; mkdtemp makes a private (0700) directory, so no tmp race.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
    workdir = Path(tempfile.mkdtemp(prefix="tollway-", dir=shm))
    drain_file = workdir / "draining"
    (workdir / "metrics").mkdir()
    env = {
        **os.environ,
        "TOLLWAY_CONFIG": str(config),
        DRAIN_FILE_ENV: str(drain_file),
        METRICS_DIR_ENV: str(workdir / "metrics"),
    }
    proc = subprocess.Popen(granian_command(settings, host, port, workers), env=env)
    signals: list[int] = []
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signals.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while proc.poll() is None and not stop.wait(0.2):
            pass
        if proc.poll() is not None:
            # Granian stopped by itself: 0 stays 0, anything else (incl. a signal) is 1.
            return 0 if proc.returncode == 0 else 1
        drain_file.touch()
        delay = settings.drain_delay_s if signals[0] == signal.SIGTERM else 0
        print(f"tollway: draining; /readyz is 503, listener closes in {delay}s", flush=True)
        deadline = time.monotonic() + delay
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(settings.shutdown_grace_s + 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return 1
        print("tollway: stopped", flush=True)
        return 0 if proc.returncode == 0 else 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
