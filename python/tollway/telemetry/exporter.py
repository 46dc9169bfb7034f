"""`Telemetry`: the request path's `record_request()` and the background task that turns records
into metrics, access-log lines and batched OTLP/HTTP exports.

The request path pays one core call (`RecordBuffer.request`: the core composes the request's
record and keeps it, bounded). Everything else runs in two asyncio tasks started from the ASGI
lifespan: *intake* takes the records in slices (`RecordBatch`), which the core folds into the
metrics and the access log (`RecordFold`), writes as MessagePack for the request log and alerts
when there are any, and queues for export (`SpanEncoder`); *sender* has the core build and
encode the next batch of spans and POSTs it, retrying transient failures with backoff. The two are
separate so a slow or dead collector only fills the export queue (spans dropped and counted)
while metrics stay exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from tollway.engine import Admission, Denial, RecordBuffer, SpanEncoder
from tollway.telemetry.accesslog import AccessLog
from tollway.telemetry.metrics import MetricsStore
from tollway.telemetry.otlp_metrics import MetricsPusher
from tollway.telemetry.record import Record
from tollway.telemetry.settings import TelemetrySettings

if TYPE_CHECKING:
    from tollway.engine import Engine
    from tollway.telemetry.observe import RequestLog

__all__ = ["Telemetry"]

_log = logging.getLogger("tollway.telemetry")
_encode = msgspec.msgpack.Encoder().encode
_json = msgspec.json.Encoder().encode

# OTLP/HTTP: these statuses are transient and must be retried with backoff; others are final.
_RETRYABLE = frozenset({408, 429, 502, 503, 504})
_CONTENT_TYPE = {"proto": "application/x-protobuf", "json": "application/json"}
# The request path's buffer only bounds memory if intake stops running; it is not the export
# queue. Capping it at a small `queue_size` lost requests from the metrics when a burst
# finished more requests than that within one event-loop turn.
_INTAKE_MIN = 16_384


# Records folded into metrics and the access log between two yields to the event loop.
_INTAKE_SLICE = 64
# Budget spend gauges: refreshed this often for other workers' scrapes (and on each scrape).
_GAUGE_PERIOD_S = 5.0
# Entities per budget rule in the spend gauges (largest spend first).
_BUDGET_SERIES = 200


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
        # The request path reads these to decide what to put in the record.
        self.tracing = tracing
        self.capture_content = tracing and not settings.exclude_request_data
        self.metrics = MetricsStore(
            settings.metadata_logging_keys, settings.metadata_value_cap, metrics_dir
        )
        self.access_log = AccessLog(access_log_level)
        self._pusher = (
            MetricsPusher(settings, self.metrics, metrics_dir, self._intake)
            if settings.metrics_endpoint is not None
            else None
        )
        # The current engine, for budget spend and crossings (set by the app; None in tests).
        self._engine: Callable[[], Engine] | None = None
        self._gauges_at = 0.0
        self._encoder = (
            SpanEncoder(
                settings.service_name,
                list(settings.resource_attributes),
                settings.exclude_request_data,
                settings.encoding,
                settings.queue_size,
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
        # The finished requests' records, in the core until intake takes them.
        self._buf = RecordBuffer()
        self._cap = max(settings.queue_size, _INTAKE_MIN)
        self._wake_at = min(settings.batch_size, settings.queue_size)
        self._wake = asyncio.Event()
        self._send_wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # The body being sent, its span count and what its loss counts as dropped (re-sent
        # once at shutdown if unsent).
        self._inflight: tuple[bytes, int, int] | None = None
        self._retry = (retry_initial_s, retry_max_s, max_retries)
        self._failing = False
        self.spans_dropped_at_queue = 0
        self.spans_exported = 0
        self.spans_dropped = 0
        # Other consumers of the records (the request log, alerts): called from intake with a
        # slice as one MessagePack array of `Record`, its length, and how many of them may go
        # in the request log (`LogPart.enabled`); must not block.
        self.sinks: list[Callable[[bytes, int, int], None]] = []
        # Request and response bodies are kept in the request log up to this many bytes.
        self.log_body_cap = 0

    # -- request path -------------------------------------------------------------------------

    def record_request(
        self,
        engine: Engine,
        log: RequestLog,
        request_id: bytes,
        duration_s: float,
        req: dict[str, Any] | None,
        adm: Admission | Denial | None,
        traceparent: bytes | None,
    ) -> None:
        """Queues a proxied request's record (the core composes it from `log`, `req` and
        `adm`); never blocks. Full queue: dropped, counted."""
        buf = self._buf
        if len(buf) >= self._cap:
            self.spans_dropped_at_queue += 1 + len(log.attempts)
            return
        messages = None
        if self.capture_content and req is not None and log.attempts:
            messages = _json(req.get("messages")).decode()
        queued = buf.request(
            engine,
            log,
            request_id,
            duration_s,
            req,
            adm,
            traceparent,
            messages,
            self.capture_content,
            self.tracing,
            self.log_body_cap if self.sinks else None,
        )
        if queued == self._wake_at:
            self._wake.set()

    def record(self, rec: Record) -> None:
        """Queues a record made in Python (MCP requests and tool calls); never blocks."""
        buf = self._buf
        if len(buf) >= self._cap:
            self.spans_dropped_at_queue += 1 + len(rec.attempts)
            return
        if buf.push_encoded(_encode(rec)) == self._wake_at:
            self._wake.set()

    # -- lifespan -----------------------------------------------------------------------------

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Starts the background tasks; `session` is the worker's shared aiohttp session."""
        self._session = session
        self._tasks = [asyncio.create_task(self._intake_loop(), name="telemetry-intake")]
        if self._encoder is not None:
            self._tasks.append(asyncio.create_task(self._send_loop(), name="telemetry-export"))
        if self._pusher is not None:
            push = self._pusher.run(session)
            self._tasks.append(asyncio.create_task(push, name="telemetry-metrics-push"))

    def watch_engine(self, current: Callable[[], Engine]) -> None:
        """Reads budget spend (gauges) and limit crossings (logged) from `current()`."""
        self._engine = current

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Processes what is queued and flushes spans for at most `timeout_s`; the rest is
        dropped and counted."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._intake()
        encoder = self._encoder
        if encoder is not None and (self._inflight is not None or len(encoder)):
            try:
                async with asyncio.timeout(timeout_s):
                    if self._inflight is not None:
                        await self._send(*self._inflight, retry=False)
                    while len(encoder):
                        await self._send_batch(retry=False)
            except TimeoutError:
                pass
            if self._inflight is not None:
                self._drop(self._inflight[2], "shutdown")
                self._inflight = None
            self._drop(encoder.clear(), "shutdown")
        if self._pusher is not None and self._session is not None:
            await self._pusher.final_push(self._session, timeout_s)
        self.metrics.flush()

    async def render(self) -> bytes:
        """Prometheus text (content type `metrics.CONTENT_TYPE`) summed over all workers."""
        await self._intake()  # a scrape sees this worker's requests up to now
        self._budgets(gauges=True)
        return self.metrics.render()

    def _budgets(self, gauges: bool) -> None:
        """Logs budget limits crossed since the last call; refreshes the spend gauges."""
        if self._engine is None:
            return
        engine = self._engine()
        for rule, entity, spent, limit, audit in engine.budget_crossings():
            _log.warning(
                "budget rule %r: %s reached its limit ($%s of $%s)%s",
                rule,
                entity or "everyone",
                usd(spent),
                usd(limit),
                " - audit mode, requests still pass" if audit else "",
            )
        if not gauges:
            return
        spend: dict[tuple[str, ...], float] = {}
        limits: dict[tuple[str, ...], float] = {}
        for rule, entity, spent, limit, _ in engine.budget_spend(_BUDGET_SERIES):
            spend[(rule, entity)] = spent
            limits[(rule, entity)] = limit
        self.metrics.set_gauges("llm_gateway_budget_spend_usd", spend)
        self.metrics.set_gauges("llm_gateway_budget_limit_usd", limits)

    # -- background ---------------------------------------------------------------------------

    async def _intake(self) -> None:
        buf = self._buf
        pending = len(buf)  # those that came in since the last intake, not those that come now
        metrics = self.metrics
        if self.spans_dropped_at_queue:
            metrics.add("llm_gateway_span_dropped_total", ("queue_full",),
                        self.spans_dropped_at_queue)  # fmt: skip
            self.spans_dropped += self.spans_dropped_at_queue
            self.spans_dropped_at_queue = 0
        now = time.monotonic()
        refresh = now - self._gauges_at >= _GAUGE_PERIOD_S
        if refresh:
            self._gauges_at = now
        self._budgets(gauges=refresh)
        if not pending:
            # Background counters (request log, alerts) still reach the other workers' scrapes;
            # a no-op when nothing changed.
            metrics.flush()
            return
        # In slices, yielding between them: this runs on the request path's CPU, and a second's
        # worth of records folded in one go would stall every request arriving meanwhile.
        access_log = self.access_log.enabled
        encoder = self._encoder
        sinks = self.sinks
        for i in range(0, pending, _INTAKE_SLICE):
            batch = buf.take(min(_INTAKE_SLICE, pending - i), bool(sinks))
            self.access_log.emit(metrics.fold(batch, access_log))
            encoded = batch.encoded() if sinks else None
            if encoded is not None:
                logged = batch.logged()
                for sink in sinks:
                    sink(encoded, len(batch), logged)
            if encoder is not None:
                self._drop(encoder.push(batch), "backlog_full")
            if i + _INTAKE_SLICE < pending:
                await asyncio.sleep(0)
        if encoder is not None and len(encoder) >= self.settings.batch_size:
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
            while self._encoder is not None and len(self._encoder):
                await self._send_batch(retry=True)

    def _drop(self, spans: int, reason: str) -> None:
        if spans:
            self.spans_dropped += spans
            self.metrics.add("llm_gateway_span_dropped_total", (reason,), spans)

    async def _send_batch(self, *, retry: bool) -> None:
        assert self._encoder is not None
        # Cannot fail: the records were decoded at intake (a bad slice fails there).
        encoded = self._encoder.encode_next(self.settings.batch_size)
        if encoded is not None:
            self._inflight = encoded
            await self._send(*encoded, retry=retry)

    async def _send(self, body: bytes, spans: int, lost: int, *, retry: bool) -> None:
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
                self._inflight = None
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
        self._drop(lost, "export_failed")
        self._inflight = None

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


# Wall-clock nanoseconds, the time base of `Record`/`Attempt` start and end (the C function
# itself: the request path reads it a few times per request).
now_ns = time.time_ns


def usd(x: float) -> str:
    """Dollars with the digits small amounts need (`1.20`, `0.000012`)."""
    return f"{x:.2f}" if x == 0 or abs(x) >= 1 else f"{x:.10f}".rstrip("0").ljust(4, "0")
