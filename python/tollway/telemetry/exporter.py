"""`Telemetry`: the request path's `record()` and the background task that turns records into
metrics, access-log lines and batched OTLP/HTTP exports.

The request path pays one bounded `list.append`. Everything else runs in two asyncio tasks
started from the ASGI lifespan: *intake* folds records into metrics and the access log and moves
them to the export backlog; *sender* encodes a batch in Rust (`tollway._core.SpanEncoder`) and
POSTs it, retrying transient failures with backoff. The two are separate so a slow or dead
collector only fills the export backlog (spans dropped and counted) while metrics stay exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from urllib.parse import urlsplit

import aiohttp
import msgspec

from tollway.engine import SpanEncoder
from tollway.telemetry.accesslog import AccessLog
from tollway.telemetry.metrics import MetricsStore
from tollway.telemetry.record import Record
from tollway.telemetry.settings import TelemetrySettings

__all__ = ["Telemetry"]

_log = logging.getLogger("tollway.telemetry")

# OTLP/HTTP: these statuses are transient and must be retried with backoff; others are final.
_RETRYABLE = frozenset({408, 429, 502, 503, 504})
_CONTENT_TYPE = {"proto": "application/x-protobuf", "json": "application/json"}
# The request path's buffer only bounds memory if intake stops running; it is not the export
# queue. Capping it at a small `queue_size` lost requests from the metrics when a burst
# finished more requests than that within one event-loop turn.
_INTAKE_MIN = 16_384


# Records folded into metrics and the access log between two yields to the event loop.
_INTAKE_SLICE = 64


class Telemetry:
    """One per worker process. `record` on the request path; `start`/`stop` in the lifespan;
    `render` for `GET /metrics`."""

    def __init__(
        self,
        settings: TelemetrySettings,
        *,
        metrics_dir: str | None = None,
        access_log_level: int = logging.INFO,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 8.0,
        max_retries: int = 6,
    ) -> None:
        self.settings = settings
        tracing = settings.traces_endpoint is not None
        # The request path reads this to decide whether to put prompt/completion in the record.
        self.capture_content = tracing and not settings.exclude_request_data
        self.metrics = MetricsStore(
            settings.metadata_logging_keys, settings.metadata_value_cap, metrics_dir
        )
        self.access_log = AccessLog(access_log_level)
        self._encoder = (
            SpanEncoder(
                settings.service_name,
                list(settings.resource_attributes),
                settings.exclude_request_data,
                settings.encoding,
            )
            if tracing
            else None
        )
        self._headers = {
            **dict(settings.headers),
            "Content-Type": _CONTENT_TYPE[settings.encoding],
        }
        url = urlsplit(settings.traces_endpoint or "")
        # For log lines: never the query string or userinfo, which may carry credentials.
        self._endpoint_for_logs = f"{url.scheme}://{url.hostname}:{url.port or ''}{url.path}"
        self._buf: list[Record] = []
        self._cap = max(settings.queue_size, _INTAKE_MIN)
        self._wake_at = min(settings.batch_size, settings.queue_size)
        self._backlog: deque[Record] = deque()
        self._wake = asyncio.Event()
        self._send_wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: list[Record] = []
        self._retry = (retry_initial_s, retry_max_s, max_retries)
        self._failing = False
        self.spans_dropped_at_queue = 0
        self.spans_exported = 0
        self.spans_dropped = 0

    # -- request path -------------------------------------------------------------------------

    def record(self, rec: Record) -> None:
        """Queues one finished request; never blocks, never raises. Full queue: dropped, counted."""
        buf = self._buf
        if len(buf) >= self._cap:
            self.spans_dropped_at_queue += 1 + len(rec.attempts)
            return
        buf.append(rec)
        if len(buf) == self._wake_at:
            self._wake.set()

    # -- lifespan -----------------------------------------------------------------------------

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Starts the background tasks; `session` is the worker's shared aiohttp session."""
        self._session = session
        self._tasks = [asyncio.create_task(self._intake_loop(), name="telemetry-intake")]
        if self._encoder is not None:
            self._tasks.append(asyncio.create_task(self._send_loop(), name="telemetry-export"))

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Processes what is queued and flushes spans for at most `timeout_s`; the rest is
        dropped and counted."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._backlog.extendleft(reversed(self._inflight))
        self._inflight = []
        await self._intake()
        if self._encoder is not None and self._backlog:
            try:
                async with asyncio.timeout(timeout_s):
                    while self._backlog:
                        await self._send_batch(retry=False)
            except TimeoutError:
                pass
            self._inflight.extend(self._backlog)
            self._backlog.clear()
            self._drop(self._inflight, "shutdown")
            self._inflight = []
        self.metrics.flush()

    async def render(self) -> bytes:
        """Prometheus text (content type `metrics.CONTENT_TYPE`) summed over all workers."""
        await self._intake()  # a scrape sees this worker's requests up to now
        return self.metrics.render()

    # -- background ---------------------------------------------------------------------------

    async def _intake(self) -> None:
        records, self._buf = self._buf, []
        metrics = self.metrics
        if self.spans_dropped_at_queue:
            metrics.add("llm_gateway_span_dropped_total", ("queue_full",),
                        self.spans_dropped_at_queue)  # fmt: skip
            self.spans_dropped += self.spans_dropped_at_queue
            self.spans_dropped_at_queue = 0
        if not records:
            return
        # In slices, yielding between them: this runs on the request path's CPU, and a second's
        # worth of records folded in one go would stall every request arriving meanwhile.
        for i in range(0, len(records), _INTAKE_SLICE):
            part = records[i : i + _INTAKE_SLICE]
            for rec in part:
                metrics.observe(rec)
            self.access_log.write(part)
            if i + _INTAKE_SLICE < len(records):
                await asyncio.sleep(0)
        if self._encoder is not None:
            room = self.settings.queue_size - len(self._backlog)
            if room < len(records):
                self._drop(records[max(room, 0) :], "backlog_full")
                records = records[: max(room, 0)]
            self._backlog.extend(records)
            if len(self._backlog) >= self.settings.batch_size:
                self._send_wake.set()
        metrics.flush()

    async def _intake_loop(self) -> None:
        # Metrics should not lag by more than a second even with a long export delay.
        period = min(self.settings.schedule_delay_ms, 1000) / 1000
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), period)
            self._wake.clear()
            try:
                await self._intake()
            except Exception:  # a bad record must not end telemetry for the process
                _log.exception("telemetry intake failed")

    async def _send_loop(self) -> None:
        delay = self.settings.schedule_delay_ms / 1000
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._send_wake.wait(), delay)
            self._send_wake.clear()
            while self._backlog:
                await self._send_batch(retry=True)

    def _drop(self, records: list[Record], reason: str) -> None:
        n = sum(1 + len(r.attempts) for r in records)
        if n:
            self.spans_dropped += n
            self.metrics.add("llm_gateway_span_dropped_total", (reason,), n)

    async def _send_batch(self, *, retry: bool) -> None:
        assert self._encoder is not None and self._session is not None
        size = min(self.settings.batch_size, len(self._backlog))
        self._inflight = [self._backlog.popleft() for _ in range(size)]
        try:
            body, spans = self._encoder.encode(msgspec.json.encode(self._inflight))
        except ValueError:
            _log.exception("telemetry batch could not be encoded")
            self._drop(self._inflight, "export_failed")
            self._inflight = []
            return
        initial, cap, tries = self._retry
        backoff = initial
        for attempt in range(tries if retry else 1):
            status, retry_after = await self._post(body)
            if status is not None and 200 <= status < 300:
                self.spans_exported += spans
                self.metrics.add("llm_gateway_span_export_total", (), spans)
                if self._failing:
                    _log.info("OTLP export to %s recovered", self._endpoint_for_logs)
                    self._failing = False
                self._inflight = []
                return
            if not self._failing:
                _log.warning(
                    "OTLP export to %s failed (%s); retrying in the background, spans are "
                    "dropped and counted while the queue is full",
                    self._endpoint_for_logs,
                    status if status is not None else "no response",
                )
                self._failing = True
            if status is not None and status not in _RETRYABLE:
                break
            if retry and attempt + 1 < tries:
                await asyncio.sleep(min(cap, max(backoff, retry_after or 0.0)))
                backoff = min(cap, backoff * 2)
        self._drop(self._inflight, "export_failed")
        self._inflight = []

    async def _post(self, body: bytes) -> tuple[int | None, float | None]:
        """(status or None on a connection error or timeout, Retry-After seconds if given)."""
        assert self._session is not None and self.settings.traces_endpoint is not None
        timeout = aiohttp.ClientTimeout(total=self.settings.export_timeout_ms / 1000)
        try:
            async with self._session.post(
                self.settings.traces_endpoint, data=body, headers=self._headers, timeout=timeout
            ) as resp:
                await resp.read()
                after = resp.headers.get("Retry-After", "")
                return resp.status, float(after) if after.isdigit() else None
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None, None


def now_ns() -> int:
    """Wall-clock nanoseconds, the time base of `Record`/`Attempt` start and end."""
    return time.time_ns()
