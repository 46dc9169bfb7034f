"""Prometheus metrics aggregated per worker off the request path and summed over workers at scrape.

Each worker updates plain dicts from the telemetry records in the background task (no locks, no
per-request prometheus_client calls) and, when a directory is configured, writes a snapshot of
its totals there after each batch. A scrape on any worker sums every worker's snapshot (its own
from memory), so one scrape sees all Granian workers; the text format is prometheus_client's.

Names are TrueFoundry's (`llm_gateway_input_tokens`, ...), so its dashboards work unchanged. The
families it documents without `_total` are exposed as `untyped`: a `counter` without the suffix
is what Prometheus stores under that exact name, but OpenMetrics-minded parsers (prometheus_client's
among them) rename its samples to `<name>_total`, which is not the series a dashboard queries.
"""

from __future__ import annotations

import contextlib
import logging
import os
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from operator import add
from pathlib import Path

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from tollway.engine import RecordBatch, RecordFold
from tollway.telemetry.record import Record

_log = logging.getLogger("tollway.telemetry")

__all__ = ["CONTENT_TYPE", "FAMILIES", "HISTOGRAMS", "MetricsStore"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_encode = msgspec.msgpack.Encoder().encode

_LATENCY_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
               60000.0, 120000.0)  # fmt: skip
_ITL_MS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)

_BASE = ("model_name", "target", "username")
# name: (kind, help, label names; "+base" the base labels, "+meta" the metadata labels).
# kind: "sum" (a counter exposed untyped under its exact name), "counter" (`_total`), "gauge".
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "llm_gateway_requests_total": ("counter", "Gateway requests by final status.",
                                   ("+base", "status", "+meta")),
    "llm_gateway_input_tokens": ("sum", "Input (prompt) tokens charged.", ("+base", "+meta")),
    "llm_gateway_output_tokens": ("sum", "Output (completion) tokens charged.",
                                  ("+base", "+meta")),
    "llm_gateway_request_cost": ("sum", "Cost of upstream calls in USD.", ("+base", "+meta")),
    "llm_gateway_request_model_inference_failure": (
        "sum", "Failed upstream attempts by status and error type.",
        ("+base", "status", "error_type", "+meta"),
    ),
    "llm_gateway_config_parsing_failures": ("sum", "Config changes rejected on reload.", ()),
    "llm_gateway_rate_limit_requests_total": ("counter", "Rate-limit decisions.",
                                              ("rule", "result")),
    "llm_gateway_budget_requests_total": (
        "counter", "Budget decisions (allowed, blocked, over_limit_audit).", ("rule", "result"),
    ),
    "llm_gateway_load_balanced_requests_total": ("counter", "Requests routed by a rule.",
                                                 ("rule", "target")),
    "llm_gateway_fallback_requests_total": ("counter", "Attempts on a fallback target.",
                                            ("rule", "target")),
    "llm_gateway_guardrails_requests_total": (
        "counter", "Guardrail runs by result (pass, flag, mutate, block, error).",
        ("guardrail", "phase", "result"),
    ),
    "llm_gateway_span_export_total": ("counter", "Spans accepted by the OTLP collector.", ()),
    "llm_gateway_span_dropped_total": ("counter", "Spans not exported, by reason.", ("reason",)),
    "llm_gateway_metrics_export_total": ("counter", "OTLP metrics pushes, by result.",
                                         ("result",)),
    "llm_gateway_state_sync_total": ("counter", "Background syncs with Redis, by result.",
                                     ("result",)),
    "llm_gateway_state_sync_outages_total": ("counter", "Times Redis became unreachable.", ()),
    "llm_gateway_cache_hits_total": ("counter", "Requests answered from the response cache.",
                                     ("rule",)),
    "llm_gateway_cache_misses_total": ("counter", "Cached requests not found in the cache.",
                                       ("rule",)),
    "llm_gateway_cache_saved_cost_total": ("counter", "USD not spent thanks to cache hits.",
                                           ("rule",)),
    "llm_gateway_cache_errors_total": ("counter", "Cache store failures, by reason.",
                                       ("reason",)),
    "llm_gateway_request_log_rows_total": ("counter", "Request-log rows by result.",
                                           ("result",)),
    "llm_gateway_alerts_total": ("counter", "Alert notifications by channel and result.",
                                 ("channel", "result")),
    "llm_gateway_budget_spend_usd": ("gauge", "Spend this period by budget rule and entity.",
                                     ("rule", "entity")),
    "llm_gateway_budget_limit_usd": ("gauge", "Limit of the budget rule for the entity.",
                                     ("rule", "entity")),
}  # fmt: skip
_GAUGES = tuple(n for n, (kind, _, _) in FAMILIES.items() if kind == "gauge")
HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "llm_gateway_request_processing_ms": ("Request latency in ms.", _LATENCY_MS),
    "llm_gateway_first_token_latency_ms": ("Time to first token in ms (streams).", _LATENCY_MS),
    "llm_gateway_inter_token_latency_ms": ("Mean inter-token latency in ms (streams).", _ITL_MS),
}
_HIST_LABELS = ("+base", "+meta")

# MCP tool calls and the agent loop, with labels of their own (no base labels); updated
# directly where they happen (a dict update), not from records.
_TOOL_LABELS = ("tool_name", "server")
_MCP_COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "llm_gateway_agent_tool_calls_total": ("MCP tool calls by result.", (*_TOOL_LABELS, "status")),
    "llm_gateway_agent_request_iteration_limit_reached_total": (
        "Agent requests stopped at max_iterations.",
        ("model_name",),
    ),
    "llm_gateway_mcp_server_failures_total": (
        "Failed calls to MCP servers (circuit open included), by reason.",
        ("server", "reason"),
    ),
}
_MCP_HISTOGRAMS: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {
    "llm_gateway_agent_tool_latency_ms": (
        "MCP tool call latency in ms.", _TOOL_LABELS, _LATENCY_MS),
    "llm_gateway_agent_mcp_connect_latency_ms": (
        "Listing an MCP server's tools for an agent request, in ms.", ("server",), _LATENCY_MS),
    "llm_gateway_agent_request_duration_ms": (
        "Agent request latency in ms (all iterations).", ("model_name",), _LATENCY_MS),
    "llm_gateway_agent_llm_latency_ms": (
        "Model call latency within agent requests in ms.", ("model_name",), _LATENCY_MS),
}  # fmt: skip

Counts = dict[str, dict[tuple[str, ...], float]]
# Per label set: non-cumulative bucket counts (+Inf last), then the sum.
Hists = dict[str, dict[tuple[str, ...], list[float]]]


class _Snapshot(msgspec.Struct, array_like=True):
    counters: dict[str, list[tuple[list[str], float]]]
    histograms: dict[str, list[tuple[list[str], list[float]]]]
    gauges: dict[str, list[tuple[list[str], float]]] = {}


class MetricsStore:
    """This worker's totals; `observe` runs in the background exporter, `render` on scrape."""

    def __init__(
        self, metadata_keys: Sequence[str], value_cap: int, directory: str | None = None
    ) -> None:
        self._meta_keys = tuple(metadata_keys)
        self._meta_labels = tuple(f"llm_gateway_metadata_{k}" for k in self._meta_keys)
        # What a record adds, and the metadata values each label has taken (bounded: past
        # `value_cap` distinct values, new ones are "other"), live in the core.
        self._fold = RecordFold(
            list(self._meta_keys), value_cap, {n: list(h[1]) for n, h in HISTOGRAMS.items()}
        )
        self._counters: Counts = {n: {} for n, f in FAMILIES.items() if f[0] != "gauge"}
        self._counters.update({n: {} for n in _MCP_COUNTERS})
        self._gauges: Counts = {n: {} for n in _GAUGES}
        self._hists: Hists = {name: {} for name in (*HISTOGRAMS, *_MCP_HISTOGRAMS)}
        self._dir = Path(directory) if directory else None
        self._file = self._dir / f"worker-{os.getpid()}.msgpack" if self._dir else None
        self._dirty = False
        # Guardrails whose last run was an error: an outage is logged when it starts and ends.
        self.failing_guardrails: set[str] = set()

    def add(self, name: str, labels: tuple[str, ...], value: float = 1.0) -> None:
        series = self._counters[name]
        series[labels] = series.get(labels, 0.0) + value
        self._dirty = True

    def set_gauges(self, name: str, values: dict[tuple[str, ...], float]) -> None:
        """Replaces a gauge family's series (e.g. budget spend, read from the engine)."""
        if self._gauges[name] != values:
            self._gauges[name] = values
            self._dirty = True

    def observe_ms(self, name: str, labels: tuple[str, ...], value: float) -> None:
        """One observation of an MCP or agent histogram."""
        self._hist(name, labels, value)
        self._dirty = True

    def _hist(self, name: str, labels: tuple[str, ...], value: float) -> None:
        row, buckets = self._row(name, labels)
        row[bisect_left(buckets, value)] += 1
        row[-1] += value

    def _row(self, name: str, labels: tuple[str, ...]) -> tuple[list[float], Sequence[float]]:
        """A histogram series' counts (one per bucket, then +Inf and the sum) and its buckets."""
        series = self._hists[name]
        mcp = _MCP_HISTOGRAMS.get(name)
        buckets = mcp[2] if mcp is not None else HISTOGRAMS[name][1]
        row = series.get(labels)
        if row is None:
            row = series[labels] = [0.0] * (len(buckets) + 2)
        return row, buckets

    def fold(self, batch: RecordBatch, access_log: bool = False) -> str:
        """Folds a batch of requests into the totals (background task; no I/O); returns its
        access-log lines when `access_log` (else "")."""
        counters, observations, lines, health = self._fold.fold(batch, access_log)
        for name, labels, value in counters:
            series = self._counters[name]
            series[labels] = series.get(labels, 0.0) + value
        for name, labels, added in observations:
            row = self._row(name, labels)[0]
            row[:] = map(add, row, added)
        for guardrail, failed in health:
            self._guardrail_health(guardrail, failed)
        self._dirty = True
        return lines

    def observe(self, rec: Record) -> None:
        """Folds one request (the exporter folds whole batches with `fold`)."""
        self.fold(RecordBatch(_encode([rec])))

    def _guardrail_health(self, name: str, failed: bool) -> None:
        """Logs a guardrail outage once when it starts and once when it ends."""
        if failed and name not in self.failing_guardrails:
            self.failing_guardrails.add(name)
            _log.warning(
                "guardrail %r is failing (its provider errors); runs are counted as "
                'result="error" until it answers again',
                name,
            )
        elif not failed and name in self.failing_guardrails:
            self.failing_guardrails.discard(name)
            _log.info("guardrail %r answers again", name)

    def _snapshot(self) -> _Snapshot:
        def rows(d: Counts) -> dict[str, list[tuple[list[str], float]]]:
            return {n: [(list(k), v) for k, v in s.items()] for n, s in d.items()}

        return _Snapshot(
            counters=rows(self._counters),
            histograms={n: [(list(k), v) for k, v in s.items()] for n, s in self._hists.items()},
            gauges=rows(self._gauges),
        )

    def flush(self) -> None:
        """Publishes this worker's totals for the other workers' scrapes (atomic replace)."""
        if self._file is None or not self._dirty:
            return
        self._dirty = False
        tmp = self._file.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_bytes(msgspec.msgpack.encode(self._snapshot()))
            os.replace(tmp, self._file)

    def merged(self) -> tuple[Counts, Hists]:
        """Every worker's totals: counters and histograms summed, gauges the largest view
        (with a shared state backend every worker sees the same spend)."""
        counters: Counts = {n: dict(s) for n, s in self._counters.items()}
        counters.update({n: dict(s) for n, s in self._gauges.items()})
        hists: Hists = {n: {k: list(v) for k, v in s.items()} for n, s in self._hists.items()}
        if self._dir is None:
            return counters, hists
        decoder = msgspec.msgpack.Decoder(_Snapshot)
        for path in self._dir.glob("worker-*.msgpack"):
            if path == self._file:
                continue
            try:
                snap = decoder.decode(path.read_bytes())
            except (OSError, msgspec.DecodeError):
                continue  # a worker mid-replace or gone: its next snapshot counts
            for name, rows in snap.counters.items():
                target = counters.setdefault(name, {})
                for labels, value in rows:
                    key = tuple(labels)
                    target[key] = target.get(key, 0.0) + value
            for name, rows in snap.gauges.items():
                target = counters.setdefault(name, {})
                for labels, value in rows:
                    key = tuple(labels)
                    target[key] = max(target.get(key, value), value)
            for name, hrows in snap.histograms.items():
                htarget = hists.setdefault(name, {})
                for labels, row in hrows:
                    key = tuple(labels)
                    have = htarget.get(key)
                    if have is None:
                        htarget[key] = row
                    elif len(have) == len(row):
                        htarget[key] = [a + b for a, b in zip(have, row, strict=True)]
        return counters, hists

    def render(self) -> bytes:
        """Prometheus text for every worker's totals."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self._families()))
        return generate_latest(registry)

    def label_names(self, spec: tuple[str, ...]) -> list[str]:
        names: list[str] = []
        for e in spec:
            if e == "+base":
                names.extend(_BASE)
            elif e == "+meta":
                names.extend(self._meta_labels)
            else:
                names.append(e)
        return names

    def _families(self) -> list[Metric]:
        counters, hists = self.merged()
        out: list[Metric] = []
        kinds = {"sum": UnknownMetricFamily, "counter": CounterMetricFamily,
                 "gauge": GaugeMetricFamily}  # fmt: skip
        for name, (kind, doc, spec) in FAMILIES.items():
            labels = self.label_names(spec)
            fam = kinds[kind](name, doc, labels=labels)
            for key, value in counters.get(name, {}).items():
                if len(key) == len(labels):  # snapshots from a differently configured worker
                    fam.add_metric(list(key), value)
            out.append(fam)
        labels = self.label_names(_HIST_LABELS)
        for name, (doc, bounds) in HISTOGRAMS.items():
            hfam = HistogramMetricFamily(name, doc, labels=labels)
            for key, row in hists.get(name, {}).items():
                if len(key) != len(labels) or len(row) != len(bounds) + 2:
                    continue
                cumulative, total = [], 0.0
                for bound, count in zip((*bounds, float("inf")), row[:-1], strict=True):
                    total += count
                    cumulative.append((_le(bound), total))
                hfam.add_metric(list(key), cumulative, sum_value=row[-1])
            out.append(hfam)
        out.extend(_mcp_families(counters, hists))
        return out


def _mcp_families(counters: Counts, hists: Hists) -> list[Metric]:
    """The MCP and agent families (their labels are their own, without the base ones)."""
    out: list[Metric] = []
    for name, (doc, labels) in _MCP_COUNTERS.items():
        fam = CounterMetricFamily(name, doc, labels=list(labels))
        for key, value in counters.get(name, {}).items():
            if len(key) == len(labels):
                fam.add_metric(list(key), value)
        out.append(fam)
    for name, (doc, labels, bounds) in _MCP_HISTOGRAMS.items():
        hfam = HistogramMetricFamily(name, doc, labels=list(labels))
        for key, row in hists.get(name, {}).items():
            if len(key) != len(labels) or len(row) != len(bounds) + 2:
                continue
            cumulative, total = [], 0.0
            for bound, count in zip((*bounds, float("inf")), row[:-1], strict=True):
                total += count
                cumulative.append((_le(bound), total))
            hfam.add_metric(list(key), cumulative, sum_value=row[-1])
        out.append(hfam)
    return out


def _le(bound: float) -> str:
    # The same spelling as prometheus_client's own histograms ("25.0", "+Inf").
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


class _Collector(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
