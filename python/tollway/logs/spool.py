"""The embedded log's spool: workers drop record files, one ingester loads them into DuckDB.

A worker's writer thread writes each batch of telemetry records as one MessagePack file
(written under a temporary name, then renamed, so a reader never sees half a file) into `<log
path>.spool/`. That is all a worker does: it joins the MessagePack slices telemetry intake
encoded for the core (no encoding of its own when every record is logged), no row building and
no DuckDB in its memory. One process per log file, the ingester (`python -m tollway.logs.ingest`),
turns the records into rows, loads them in one statement a pass and deletes the files; it also
enforces retention. Whichever worker holds `<log path>.spool/ingest.lock` (an `flock`, released by
the kernel when its holder dies) runs it as a child; when that worker goes, the ingester finishes
its pass and exits, and another worker takes the lock over.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

from tollway.logs.ingest import READY, RECORDS, Ingester, spool_dir
from tollway.logs.settings import LogSettings

__all__ = ["Spool", "backlog"]

_log = logging.getLogger("tollway.logs")
LOCK = "ingest.lock"
# Past this many unloaded files (~a day of batches at full speed) a worker drops and counts.
MAX_FILES = 20_000
PENDING = (RECORDS, READY)


def backlog(directory: Path) -> int:
    """Batch files in a spool directory that the ingester has not loaded yet."""
    try:
        return sum(1 for e in os.scandir(directory) if e.name.endswith(PENDING))
    except OSError:
        return 0


class Spool:
    """A worker's side of the spool: `write` from the writer thread, `close` at shutdown."""

    rows = False  # as a writer's sink: takes the records themselves

    def __init__(self, path: str, settings: LogSettings) -> None:
        self.path = path
        self.dir = spool_dir(path)
        self.settings = settings
        self._seq = 0
        self._lock: IO[bytes] | None = None
        self._child: subprocess.Popen[bytes] | None = None

    def write(self, data: bytes) -> None:
        """One batch of records, visible to the ingester only once complete. Raises OSError."""
        if self._seq % 64 == 0 and backlog(self.dir) >= MAX_FILES:
            raise OSError("the request-log spool is full (is the ingester stuck?)")
        self._seq += 1
        self.dir.mkdir(parents=True, exist_ok=True)
        name = self.dir / f"{os.getpid()}-{self._seq:09d}"
        tmp = name.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, name.with_suffix(RECORDS))

    def ensure_running(self) -> None:
        """Starts the ingester if no worker runs one (cheap when this worker already does)."""
        if self._child is not None:
            if self._child.poll() is None:
                return
            code = self._child.returncode
            _log.warning("request log: the ingester exited (%s); restarting it", code)
            self._child = None
        if self._lock is None and not self._take_lock():
            return
        s = self.settings
        self._child = subprocess.Popen(
            [sys.executable, "-m", "tollway.logs.ingest", self.path,
             "--interval-ms", str(s.flush_interval_ms),
             "--retention-days", str(s.retention_days),
             "--body-retention-days", str(s.body_retention_days),
             "--retention-interval-s", str(s.retention_interval_s),
             "--parent", str(os.getpid())],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def _take_lock(self) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True)
        f = open(self.dir / LOCK, "ab")  # noqa: SIM115 (held for the worker's life)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        self._lock = f
        return True

    def retain(self, days: int, body_days: int, now_s: float | None = None) -> tuple[int, int]:
        return 0, 0  # the ingester's work

    def close(self, timeout_s: float) -> None:
        """Loads what is spooled before the worker goes: the ingester's last pass, or (when
        another worker ran it and has gone) one pass here."""
        child, self._child = self._child, None
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        elif backlog(self.dir) and (self._lock is not None or self._take_lock()):
            Ingester(self.path, self.settings.retention_days,
                     self.settings.body_retention_days).load_all()  # fmt: skip
        if self._lock is not None:
            self._lock.close()
            self._lock = None
