"""Resolved telemetry settings: `gateway-settings.otel`/`.metrics` over the environment.

The environment is read as the OTEL SDK and TrueFoundry's gateway document it: `OTEL_*`,
`ENABLE_OTEL_TRACING`, `ENABLE_OTEL_METRICS` and `LLM_GATEWAY_METADATA_LOGGING_KEYS`; where the
config file sets the same thing, the file wins. This module is only that overlay: the schema
is checked in the core, and every default comes from it (`telemetry_defaults()`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import msgspec

from tollway.engine import telemetry_defaults

__all__ = ["TelemetrySettings"]

log = logging.getLogger("tollway.telemetry")

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
_LABEL_SAFE = re.compile(r"[A-Za-z0-9_]+")


def _flag(environ: Mapping[str, str], name: str) -> bool | None:
    """True/False for a set boolean variable, None when unset or unreadable."""
    value = environ.get(name, "").strip().lower()
    return True if value in _TRUE else False if value in _FALSE else None


def _env_keys(environ: Mapping[str, str]) -> list[str]:
    """`LLM_GATEWAY_METADATA_LOGGING_KEYS`: a JSON list (`'["customer_id"]'`) or `a,b`."""
    raw = environ.get("LLM_GATEWAY_METADATA_LOGGING_KEYS", "").strip()
    if not raw:
        return []
    try:
        value = msgspec.json.decode(raw) if raw.startswith("[") else raw.split(",")
    except msgspec.DecodeError:
        value = None
    if not isinstance(value, list):
        log.warning("LLM_GATEWAY_METADATA_LOGGING_KEYS is not a JSON list of keys; ignored")
        return []
    keys: list[str] = []
    for k in value:
        k = str(k).strip()
        if not _LABEL_SAFE.fullmatch(k):
            # Each key becomes part of a label name: letters, digits and underscores only.
            log.warning("LLM_GATEWAY_METADATA_LOGGING_KEYS: %r is not label-safe; ignored", k)
        elif k not in keys:
            keys.append(k)
    return keys


def _pairs(text: str) -> list[tuple[str, str]]:
    """`k=v,k2=v2` with percent-encoded values, as the OTEL SDK reads its list variables."""
    out = []
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            out.append((unquote(name.strip()), unquote(value.strip())))
    return out


def _merge(env: list[tuple[str, str]], config: list[tuple[str, str]], fold: bool) -> list[Any]:
    """Config entries replace environment entries of the same name (headers case-insensitively)."""

    def key(k: str) -> str:
        return k.lower() if fold else k

    names = {key(k) for k, _ in config}
    return [(k, v) for k, v in env if key(k) not in names] + list(config)


def _int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


class TelemetrySettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the exporter, metrics and access log need; `traces_endpoint` None = no traces.
    Built by `from_config` (the defaults are the core's, see `telemetry_defaults()`)."""

    traces_endpoint: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    resource_attributes: tuple[tuple[str, str], ...] = ()
    service_name: str
    encoding: str
    exclude_request_data: bool
    batch_size: int
    queue_size: int
    export_timeout_ms: int
    schedule_delay_ms: int
    metadata_logging_keys: tuple[str, ...] = ()
    metadata_value_cap: int
    # OTLP/HTTP metrics push; None = only `/metrics` is served.
    metrics_endpoint: str | None = None
    metrics_headers: tuple[tuple[str, str], ...] = ()
    metrics_export_interval_ms: int

    def __repr__(self) -> str:
        # Header values are exporter credentials; only their names may be shown.
        names = [k for k, _ in self.headers]
        metric_names = [k for k, _ in self.metrics_headers]
        return (
            f"TelemetrySettings(traces_endpoint={self.traces_endpoint!r}, header_names={names!r}, "
            f"service_name={self.service_name!r}, encoding={self.encoding!r}, "
            f"exclude_request_data={self.exclude_request_data!r}, "
            f"metrics_endpoint={self.metrics_endpoint!r}, metrics_header_names={metric_names!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_config(
        cls,
        otel: Mapping[str, Any] | None,
        metrics: Mapping[str, Any] | None,
        environ: Mapping[str, str],
    ) -> TelemetrySettings:
        """`otel`/`metrics` are the validated `gateway-settings` sections (or None);
        `environ` is usually `os.environ`. The config file wins over the environment."""
        otel = otel or {}
        metrics = metrics or {}
        d = telemetry_defaults()
        disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE
        endpoint = otel.get("traces_endpoint") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if not endpoint and environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            # The SDK appends the signal path to the generic endpoint, never to the traces one.
            endpoint = environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
        if (disabled or _flag(environ, "ENABLE_OTEL_TRACING") is False) and not otel.get(
            "traces_endpoint"
        ):
            endpoint = None
        env_headers = _pairs(
            environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            or environ.get("OTEL_EXPORTER_OTLP_HEADERS", "")
        )
        headers = _merge(env_headers, list(dict(otel.get("headers") or {}).items()), fold=True)
        env_attrs = _pairs(environ.get("OTEL_RESOURCE_ATTRIBUTES", ""))
        attrs = _merge(env_attrs, list(dict(otel.get("resource_attributes") or {}).items()), False)
        config_attrs = dict(otel.get("resource_attributes") or {})
        service = (
            otel.get("service_name")
            or config_attrs.get("service.name")
            or environ.get("OTEL_SERVICE_NAME")
            or dict(env_attrs).get("service.name")
            or d.service_name
        )
        protocol = (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
        ).strip()
        encoding = otel.get("encoding") or ("json" if protocol == "http/json" else d.encoding)
        batch = otel.get("batch_size") or _int(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
        queue = otel.get("queue_size") or _int(environ, "OTEL_BSP_MAX_QUEUE_SIZE") or d.queue_size
        return cls(
            traces_endpoint=endpoint or None,
            headers=tuple(headers),
            resource_attributes=tuple((k, v) for k, v in attrs if k != "service.name"),
            service_name=str(service),
            encoding=str(encoding),
            exclude_request_data=bool(otel.get("exclude_request_data", d.exclude_request_data)),
            batch_size=int(min(batch or d.batch_size, queue)),
            queue_size=int(queue),
            export_timeout_ms=int(
                otel.get("export_timeout_ms")
                or _int(environ, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
                or _int(environ, "OTEL_EXPORTER_OTLP_TIMEOUT")
                or d.export_timeout_ms
            ),
            schedule_delay_ms=int(
                otel.get("schedule_delay_ms")
                or _int(environ, "OTEL_BSP_SCHEDULE_DELAY")
                or d.schedule_delay_ms
            ),
            metadata_logging_keys=tuple(
                _env_keys(environ)
                if metrics.get("metadata_logging_keys") is None
                else metrics["metadata_logging_keys"]
            ),
            metadata_value_cap=int(metrics.get("metadata_value_cap") or d.metadata_value_cap),
            **_metrics_push(otel, environ, disabled, d.metrics_export_interval_ms),
        )


def _metrics_push(
    otel: Mapping[str, Any],
    environ: Mapping[str, str],
    disabled: bool,
    default_interval_ms: int,
) -> dict[str, Any]:
    """`metrics_endpoint`, `metrics_headers`, `metrics_export_interval_ms` for the push.

    From the environment: `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (unless `ENABLE_OTEL_METRICS`
    is false), or the generic `OTEL_EXPORTER_OTLP_ENDPOINT` plus `/v1/metrics` when
    `ENABLE_OTEL_METRICS` is true.
    """
    enabled = _flag(environ, "ENABLE_OTEL_METRICS")
    endpoint = otel.get("metrics_endpoint")
    if not endpoint and enabled is not False and not disabled:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip() or None
        generic = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if not endpoint and enabled and generic:
            endpoint = generic.rstrip("/") + "/v1/metrics"
    if enabled and not endpoint:
        log.warning("ENABLE_OTEL_METRICS is set but no metrics endpoint is; no metrics push")
    env_headers = _pairs(
        environ.get("OTEL_EXPORTER_OTLP_METRICS_HEADERS")
        or environ.get("OTEL_EXPORTER_OTLP_HEADERS", "")
    )
    config_headers = list(dict(otel.get("metrics_headers") or {}).items())
    if not config_headers and otel.get("metrics_endpoint"):
        # Both signals configured in the file: the traces headers serve the metrics too.
        config_headers = list(dict(otel.get("headers") or {}).items())
    headers = _merge(env_headers, config_headers, fold=True)
    interval = (
        otel.get("metrics_export_interval_ms")
        or _int(environ, "OTEL_METRIC_EXPORT_INTERVAL")
        or default_interval_ms
    )
    return {
        "metrics_endpoint": endpoint or None,
        "metrics_headers": tuple(headers),
        "metrics_export_interval_ms": int(interval),
    }
