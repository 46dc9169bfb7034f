"""The embedded log's ingester: `python -m tollway.logs.ingest <log path>` (started by a worker,
see `tollway.logs.spool`). Loads spooled records into DuckDB and enforces retention.

A pass turns each complete record file (`*.rec`, written by a worker) into a row file (`*.ndjson`,
`encode_rows`) of the same name, then loads every row file in one statement and deletes it; the row
file replaces its record file atomically, so a pass cut short repeats no row. A file that cannot be
read is renamed `*.bad` and logged (a torn write from a killed worker, never expected otherwise).
The process exits after one last pass on SIGTERM/SIGINT or when its parent worker has gone.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import msgspec

from tollway.logs.row import encode_rows, row_of
from tollway.logs.store import EmbeddedStore, StoreBusy
from tollway.telemetry.record import Record

__all__ = ["READY", "RECORDS", "Ingester", "main", "spool_dir"]

_log = logging.getLogger("tollway.logs")
# A complete batch of records from a worker (written as .tmp, then renamed): one MessagePack
# array of records (tollway.logs.writer), or newline-delimited JSON records (older workers).
RECORDS = ".rec"
READY = ".ndjson"  # a complete batch of rows, made from one record file
_records = msgspec.msgpack.Decoder(list[Record])
_records_json = msgspec.json.Decoder(Record)
# Files per statement: bounds one transaction (~10k rows a file at most).
PASS_FILES = 256
# A pass costs ~25 ms of CPU whatever it loads (opening the file is 12-25 ms: DuckDB builds
# its instance), so passes are spaced out: after a pass that loaded anything the next waits
# at least LIGHT_WAIT_S (the fixed cost then stays under 1% of a CPU), and BUSY_WAIT_S after
# one that loaded more than BUSY_BYTES (each pass then carries ~15k rows at saturation).
# After an idle spell the first rows show within the flush interval.
LIGHT_WAIT_S = 2.5
BUSY_BYTES = 512 * 1024
BUSY_WAIT_S = 5.0


def pause_s(loaded: int, interval_s: float) -> float:
    """How long the ingester waits after a pass that loaded `loaded` bytes."""
    if loaded > BUSY_BYTES:
        return BUSY_WAIT_S
    return max(interval_s, LIGHT_WAIT_S) if loaded else interval_s


def spool_dir(path: str) -> Path:
    return Path(f"{path}.spool")


class Ingester:
    def __init__(self, path: str, retention_days: int, body_retention_days: int) -> None:
        # Appends and retention need little memory; DuckDB would otherwise cache up to 80% of RAM.
        self.store = EmbeddedStore(path, wait_s=30.0, memory_limit="128MB")
        self.dir = spool_dir(path)
        self.retention = (retention_days, body_retention_days)
        self.loaded = 0
        self.loaded_bytes = 0

    def ready(self, suffix: str = READY) -> list[str]:
        try:
            names = sorted(e.name for e in os.scandir(self.dir) if e.name.endswith(suffix))
        except OSError:
            return []
        return [str(self.dir / n) for n in names]

    def convert(self, path: str) -> None:
        """One record file into the row file of the same name (which replaces it)."""
        try:
            with open(path, "rb") as f:
                data = f.read()
            json = data[:1] == b"["
            records = _records_json.decode_lines(data) if json else _records.decode(data)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            _log.error("request log: %s cannot be read; kept as .bad", os.path.basename(path))
            with contextlib.suppress(OSError):
                os.rename(path, path + ".bad")
            return
        rows = [r for r in map(row_of, records) if r is not None]
        stem = path[: -len(RECORDS)]
        if not rows:
            os.unlink(path)
            return
        tmp = stem + ".rows.tmp"
        with open(tmp, "wb") as f:
            f.write(encode_rows(rows))
        os.rename(tmp, stem + READY)
        os.unlink(path)

    def load_all(self) -> int:
        """Loads every complete file; what cannot be loaded now stays for the next pass.
        The bytes loaded."""
        before = self.loaded_bytes
        for path in self.ready(RECORDS):
            try:
                self.convert(path)
            except OSError as e:  # a full disk: this file waits for the next pass
                _log.warning("request log: could not convert a spool file (%s)", type(e).__name__)
                break
        files = self.ready()
        for i in range(0, len(files), PASS_FILES):
            self._load(files[i : i + PASS_FILES])
        return self.loaded_bytes - before

    def _load(self, files: list[str]) -> None:
        import duckdb

        size = 0
        for f in files:
            with contextlib.suppress(OSError):
                size += os.path.getsize(f)
        try:
            self.store.load(files)
        except StoreBusy:
            return  # a long query holds the file: the next pass loads these
        except duckdb.Error:
            if len(files) > 1:
                for f in files:  # find the unreadable one, load the rest
                    self._load([f])
                return
            _log.error("request log: %s cannot be read; kept as .bad", os.path.basename(files[0]))
            with contextlib.suppress(OSError):
                os.rename(files[0], files[0] + ".bad")
            return
        for f in files:
            with contextlib.suppress(OSError):
                os.unlink(f)
        self.loaded += len(files)
        self.loaded_bytes += size

    def retain(self) -> None:
        try:
            rows, bodies = self.store.retain(*self.retention)
        except Exception as e:
            _log.warning("request log retention failed (%s)", type(e).__name__)
            return
        if rows or bodies:
            _log.info("request log retention: %d rows deleted, %d bodies cleared", rows, bodies)


def _background_priority() -> None:
    """The ingester's work shares the workers' CPUs: a pass should delay requests as little as
    it can, and at saturation the log waits rather than take the workers' throughput (the spool
    holds what waits). SCHED_IDLE delays a waking worker less than nice 19 alone (guarded load-test
    config, p99 at 350 RPS in alternating runs: median 2.45 ms at nice 19, 1.78 ms under
    SCHED_IDLE, six runs each), but not to nothing: on a preempt=none kernel the worker may
    still wait for the next tick while a pass runs (docs/request-logs.md).
    The weights: an idle-policy task gets ~0.3% of a CPU a worker keeps busy, nice 19 ~1.5%
    (measured at nice 10: added p99 7.6 ms with the ingester at the workers' priority, 3.8 ms
    with the log off). Nice 19 stays where the idle policy is not available. Set before
    DuckDB starts its threads, which inherit it."""
    with contextlib.suppress(OSError):
        os.nice(19)
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tollway.logs.ingest")
    p.add_argument("path")
    p.add_argument("--interval-ms", type=int, default=500)
    p.add_argument("--retention-days", type=int, default=30)
    p.add_argument("--body-retention-days", type=int, default=7)
    p.add_argument("--retention-interval-s", type=float, default=3600.0)
    p.add_argument("--parent", type=int, default=0)
    a = p.parse_args(argv)
    _background_priority()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ing = Ingester(a.path, a.retention_days, a.body_retention_days)
    next_retention = 0.0
    while True:
        loaded = ing.load_all()
        if time.monotonic() >= next_retention:
            next_retention = time.monotonic() + a.retention_interval_s
            ing.retain()
        if stop.is_set() or (a.parent and os.getppid() != a.parent):
            ing.load_all()
            return 0
        stop.wait(pause_s(loaded, a.interval_ms / 1000))


if __name__ == "__main__":
    raise SystemExit(main())
