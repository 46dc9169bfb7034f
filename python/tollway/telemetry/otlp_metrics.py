"""OTLP metrics push: the families `/metrics` shows, POSTed as OTLP/HTTP on an interval.

Off the request path: a background task wakes every `metrics_export_interval_ms`, takes every
worker's totals from the metrics store (the same merge a scrape does), has Rust build and encode
the `ExportMetricsServiceRequest` (cumulative sums, the same histogram buckets, gauges), and
POSTs it with a timeout. A dead or slow receiver only makes that task wait; each push is counted
in `llm_gateway_metrics_export_total{result}` and an outage is logged when it starts and ends.

With several workers sharing a metrics directory, one of them pushes (it holds an advisory lock
on a file there; if it exits, another takes over at its next tick), so the receiver gets one
series per label set, not one per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from tollway.engine import MetricsEncoder
from tollway.telemetry.metrics import FAMILIES, HISTOGRAMS, MetricsStore
from tollway.telemetry.settings import TelemetrySettings

__all__ = ["MetricsPusher"]

_log = logging.getLogger("tollway.telemetry")
_CONTENT_TYPE = {"proto": "application/x-protobuf", "json": "application/json"}
_KIND = {"sum": "counter", "counter": "counter", "gauge": "gauge"}


class Family(msgspec.Struct, array_like=True):
    """One family for `MetricsEncoder` (rust `telemetry/metrics_otlp.rs` reads this order)."""

    name: str
    description: str
    unit: str
    kind: str
    labels: list[str]
    bounds: list[float]
    # (label values, value, non-cumulative bucket counts with +Inf last, sum)
    points: list[tuple[list[str], float, list[float], float]]


class MetricsPusher:
    """One per worker; `run` is the background task (cancel it to stop)."""

    def __init__(
        self,
        settings: TelemetrySettings,
        store: MetricsStore,
        metrics_dir: str | None,
        before_push: Callable[[], Any] | None = None,
    ) -> None:
        assert settings.metrics_endpoint is not None
        self._url = settings.metrics_endpoint
        self._store = store
        self._interval_s = settings.metrics_export_interval_ms / 1000
        self._timeout = aiohttp.ClientTimeout(total=settings.export_timeout_ms / 1000)
        self._encoder = MetricsEncoder(
            settings.service_name, list(settings.resource_attributes), settings.encoding
        )
        self._headers = {
            **dict(settings.metrics_headers),
            "Content-Type": _CONTENT_TYPE[settings.encoding],
        }
        self._lock_path = Path(metrics_dir) / "otlp-metrics.lock" if metrics_dir else None
        self._lock: IO[bytes] | None = None
        self._before_push = before_push
        self._start_ns = time.time_ns()
        self._failing = False
        url = urlsplit(self._url)
        # For log lines: never the query string or userinfo, which may carry credentials.
        self._for_logs = f"{url.scheme}://{url.hostname}:{url.port or ''}{url.path}"

    def _leader(self) -> bool:
        """Whether this worker pushes (always, without a shared metrics directory)."""
        if self._lock_path is None or self._lock is not None:
            return True
        f = self._lock_path.open("ab")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        self._lock = f
        return True

    def batch(self) -> bytes:
        """The encoded export request for every worker's totals now."""
        counters, hists = self._store.merged()
        families = []
        for name, (kind, doc, spec) in FAMILIES.items():
            labels = self._store.label_names(spec)
            points: list[tuple[list[str], float, list[float], float]] = [
                (list(k), v, [], 0.0)
                for k, v in counters.get(name, {}).items()
                if len(k) == len(labels)
            ]
            families.append(Family(name, doc, "", _KIND[kind], labels, [], points))
        labels = self._store.label_names(("+base", "+meta"))
        for name, (doc, bounds) in HISTOGRAMS.items():
            hpoints = [
                (list(k), sum(row[:-1]), row[:-1], row[-1])
                for k, row in hists.get(name, {}).items()
                if len(k) == len(labels) and len(row) == len(bounds) + 2
            ]
            families.append(Family(name, doc, "", "histogram", labels, list(bounds), hpoints))
        payload = msgspec.json.encode((self._start_ns, time.time_ns(), families))
        return self._encoder.encode(payload)

    async def push(self, session: aiohttp.ClientSession) -> bool:
        """One push; True when the receiver took it. Counted either way."""
        if self._before_push is not None:
            await self._before_push()
        body = self.batch()
        ok = False
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            async with session.post(
                self._url, data=body, headers=self._headers, timeout=self._timeout
            ) as resp:
                await resp.read()
                ok = 200 <= resp.status < 300
        self._store.add("llm_gateway_metrics_export_total", ("ok" if ok else "failed",))
        if not ok and not self._failing:
            _log.warning("OTLP metrics push to %s failed; retrying each interval", self._for_logs)
        elif ok and self._failing:
            _log.info("OTLP metrics push to %s recovered", self._for_logs)
        self._failing = not ok
        return ok

    async def run(self, session: aiohttp.ClientSession) -> None:
        try:
            while True:
                await asyncio.sleep(self._interval_s)
                if not self._leader():
                    continue
                try:
                    await self.push(session)
                except Exception:  # a bad batch must not end the push for the process
                    _log.exception("OTLP metrics push failed")
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    async def final_push(self, session: aiohttp.ClientSession, timeout_s: float) -> None:
        """At shutdown: the last totals, bounded by `timeout_s` (leader only)."""
        if not self._leader():
            return
        with contextlib.suppress(TimeoutError, Exception):
            async with asyncio.timeout(timeout_s):
                await self.push(session)
