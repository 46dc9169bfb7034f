"""The request log's writer: records in from telemetry intake, a batch out to each sink.

`submit` runs on the event loop (telemetry intake, never the request path) and only appends
to a bounded deque; a full queue drops and counts. One thread per worker hands each batch to
its sinks in the form they take: the embedded log's spool (`tollway.logs.spool`) takes the
records themselves, as one MessagePack array (the slices telemetry intake already encoded for
the core are joined as they are; the ingester process turns the records into rows, off the
workers' CPU budget); ClickHouse takes rows (an insert a batch, with retention enforced from
here now and then).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol, cast

import msgspec

from tollway.logs.row import Row, encode_rows, logged, row_of
from tollway.logs.settings import LogSettings
from tollway.telemetry.metrics import MetricsStore
from tollway.telemetry.record import Record, decode_records

__all__ = ["LogWriter", "Sink", "Store", "join_arrays"]

_log = logging.getLogger("tollway.logs")
METRIC = "llm_gateway_request_log_rows_total"
RESULTS = ("written", "excluded", "dropped_queue_full", "dropped_store_error")
# Records turned into rows (~1 ms of Python) between two releases of the GIL: the event loop
# of the same worker waits at most that long for this thread, not the interpreter's 5 ms
# switch interval.
SLICE = 256
_encode = msgspec.msgpack.Encoder().encode
# A slice: how many records, the records (None: all of them are logged and only encoded),
# and their MessagePack array (None: not encoded yet).
Slice = tuple[int, list[Record] | None, bytes | None]


class Store(Protocol):
    def insert(self, rows: Sequence[Row]) -> None: ...

    def retain(self, days: int, body_days: int, now_s: float | None = None) -> tuple[int, int]: ...

    def query(
        self, sql: str, params: Sequence[Any] = ()
    ) -> tuple[list[str], list[tuple[Any, ...]]]: ...


class Sink(Protocol):
    """Where the writer thread puts each encoded batch: rows (`encode_rows`) when `rows` is
    true, else the records themselves (one MessagePack array of `Record`)."""

    rows: bool

    def write(self, data: bytes) -> None: ...

    def ensure_running(self) -> None:
        """Starts (or takes over) the sink's background part; called each writer pass."""

    def retain(self, days: int, body_days: int, now_s: float | None = None) -> tuple[int, int]: ...

    def close(self, timeout_s: float) -> None: ...


class LogWriter:
    """One per worker: `start`/`stop` from the lifespan, `submit` from telemetry intake."""

    def __init__(
        self, settings: LogSettings, sinks: Sequence[Sink], metrics: MetricsStore | None = None
    ) -> None:
        self.settings = settings
        self.sinks = tuple(sinks)
        self._queue: deque[Slice] = deque()
        self._queued = 0  # records in the queue
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._metrics = metrics
        if metrics is not None:
            # Every series exists before the thread counts into it (no dict resize mid-scrape).
            for result in RESULTS:
                metrics.add(METRIC, (result,), 0.0)
        self.counts = dict.fromkeys(RESULTS, 0)
        self._failing = False

    def _count(self, result: str, n: int) -> None:
        self.counts[result] += n
        if self._metrics is not None and n:
            self._metrics.add(METRIC, (result,), n)

    # -- event loop ---------------------------------------------------------------------------

    def submit(self, records: list[Record], encoded: bytes | None = None) -> None:
        """Queues records; `encoded`: the same records as a MessagePack array, if at hand."""
        room = self.settings.queue_size - self._queued
        if room < len(records):
            self._count("dropped_queue_full", len(records) - max(room, 0))
            records, encoded = records[: max(room, 0)], None
        if records:
            self._enqueue((len(records), records, encoded))

    def submit_encoded(self, encoded: bytes, count: int, logged: int) -> None:
        """Queues a slice as telemetry intake has it: one MessagePack array of `count`
        records, `logged` of which may go in the log. When all may and there is room, the
        records are never decoded in this process."""
        if logged < count or self.settings.queue_size - self._queued < count:
            self.submit(decode_records(encoded), encoded)
        else:
            self._enqueue((count, None, encoded))

    def _enqueue(self, part: Slice) -> None:
        self._queue.append(part)
        self._queued += part[0]
        if self._queued >= self.settings.batch_size:
            self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Writes what is queued (bounded by `timeout_s`); the rest is dropped and counted."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._queue:
            self._count("dropped_queue_full", self._queued)
            self._queue.clear()
            self._queued = 0
        for sink in self.sinks:
            try:
                sink.close(timeout_s)
            except Exception as e:
                _log.warning("request log: %s did not close (%s)", type(sink).__name__,
                             type(e).__name__)  # fmt: skip

    # -- writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        s = self.settings
        next_retention = 0.0
        while True:
            # Each pass spools what came in since the last: a file is cheap (the ingester
            # batches the DuckDB work), and fewer records wait in memory.
            self._wake.wait(s.flush_interval_ms / 1000)
            self._wake.clear()
            stopping = self._stop.is_set()
            for sink in () if stopping else self.sinks:
                try:
                    sink.ensure_running()
                except Exception as e:
                    _log.warning("request log: %s did not start (%s)", type(sink).__name__,
                                 type(e).__name__)  # fmt: skip
            while self._queue:
                self._write_batch()
            if time.monotonic() >= next_retention:
                next_retention = time.monotonic() + s.retention_interval_s
                self._retain()
            if stopping:
                return

    def _write_batch(self) -> None:
        q = self._queue
        slices: list[Slice] = []
        n = 0
        while q and n < self.settings.batch_size:
            part = q.popleft()
            size, records, encoded = part
            n += size
            self._queued -= size
            if records is None:
                slices.append(part)
                continue
            kept = list(filter(logged, records))
            self._count("excluded", size - len(kept))
            if kept:
                slices.append((len(kept), kept, encoded if len(kept) == size else None))
        if not slices:
            return
        count = sum(size for size, _, _ in slices)
        encoded_batch: dict[bool, bytes] = {}
        for sink in self.sinks:
            try:
                data = encoded_batch.get(sink.rows)
                if data is None:
                    data = encoded_batch[sink.rows] = self._encode(slices, sink.rows)
                sink.write(data)
            except Exception as e:  # a store's fault must not end the writer
                self._count("dropped_store_error", count)
                if not self._failing:
                    _log.warning("request log: %s could not write (%s)", type(sink).__name__,
                                 type(e).__name__)  # fmt: skip
                    self._failing = True
                continue
            self._count("written", count)
            self._failing = False

    @staticmethod
    def _encode(slices: list[Slice], rows: bool) -> bytes:
        if rows:
            parts = []
            for _, kept, encoded in slices:
                # A slice queued without its records always has their array.
                records = kept if kept is not None else decode_records(cast(bytes, encoded))
                for i in range(0, len(records), SLICE):
                    part = records[i : i + SLICE]
                    parts.append(encode_rows([r for r in map(row_of, part) if r is not None]))
                    time.sleep(0)  # hand the GIL to the event loop between slices
            return b"".join(parts)
        arrays = [
            encoded if encoded is not None else _encode(records) for _, records, encoded in slices
        ]
        return join_arrays(arrays, sum(size for size, _, _ in slices))

    def _retain(self) -> None:
        s = self.settings
        for sink in self.sinks:
            try:
                rows, bodies = sink.retain(s.retention_days, s.body_retention_days)
            except Exception as e:
                _log.warning("request log retention failed (%s)", type(e).__name__)
                continue
            if rows or bodies:
                _log.info("request log retention: %d rows deleted, %d bodies cleared", rows, bodies)


def join_arrays(arrays: list[bytes], count: int) -> bytes:
    """One MessagePack array of the `count` elements of `arrays` (each a MessagePack array),
    their bytes as they are: only the array headers are rewritten."""
    body = b"".join(a[_header_size(a[0]) :] for a in arrays)
    if count < 16:
        return bytes((0x90 | count,)) + body
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big") + body
    return b"\xdd" + count.to_bytes(4, "big") + body


def _header_size(first: int) -> int:
    if 0x90 <= first <= 0x9F:  # fixarray
        return 1
    if first == 0xDC:  # array 16
        return 3
    if first == 0xDD:  # array 32
        return 5
    raise ValueError("not a MessagePack array")
