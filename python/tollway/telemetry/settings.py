"""Resolved telemetry settings: `gateway-settings.otel`/`.metrics` over the `OTEL_*` environment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import msgspec

__all__ = ["TelemetrySettings"]

_TRUE = ("true", "1", "yes")


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
    """Everything the exporter, metrics and access log need; `traces_endpoint` None = no traces."""

    traces_endpoint: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    resource_attributes: tuple[tuple[str, str], ...] = ()
    service_name: str = "tollway"
    encoding: str = "proto"
    # Prompts and answers leave the gateway only when asked (GenAI content is opt-in).
    exclude_request_data: bool = True
    # Smaller than the SDK's 512: a batch is encoded on the request path's CPU (~6 us a
    # record), so 128 bounds that stall to about 0.8 ms.
    batch_size: int = 128
    queue_size: int = 4096
    export_timeout_ms: int = 10_000
    schedule_delay_ms: int = 1_000
    metadata_logging_keys: tuple[str, ...] = ()
    metadata_value_cap: int = 100

    def __repr__(self) -> str:
        # Header values are exporter credentials; only their names may be shown.
        names = [k for k, _ in self.headers]
        return (
            f"TelemetrySettings(traces_endpoint={self.traces_endpoint!r}, header_names={names!r}, "
            f"service_name={self.service_name!r}, encoding={self.encoding!r}, "
            f"exclude_request_data={self.exclude_request_data!r})"
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
        disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE
        endpoint = otel.get("traces_endpoint") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if not endpoint and environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            # The SDK appends the signal path to the generic endpoint, never to the traces one.
            endpoint = environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
        if disabled and not otel.get("traces_endpoint"):
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
            or "tollway"
        )
        protocol = (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
        ).strip()
        encoding = otel.get("encoding") or ("json" if protocol == "http/json" else "proto")
        batch = otel.get("batch_size") or _int(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or 128
        queue = otel.get("queue_size") or _int(environ, "OTEL_BSP_MAX_QUEUE_SIZE") or 4096
        return cls(
            traces_endpoint=endpoint or None,
            headers=tuple(headers),
            resource_attributes=tuple((k, v) for k, v in attrs if k != "service.name"),
            service_name=str(service),
            encoding=str(encoding),
            exclude_request_data=bool(otel.get("exclude_request_data", True)),
            batch_size=int(min(batch, queue)),
            queue_size=int(queue),
            export_timeout_ms=int(
                otel.get("export_timeout_ms")
                or _int(environ, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
                or _int(environ, "OTEL_EXPORTER_OTLP_TIMEOUT")
                or 10_000
            ),
            schedule_delay_ms=int(
                otel.get("schedule_delay_ms") or _int(environ, "OTEL_BSP_SCHEDULE_DELAY") or 1_000
            ),
            metadata_logging_keys=tuple(metrics.get("metadata_logging_keys") or ()),
            metadata_value_cap=int(metrics.get("metadata_value_cap") or 100),
        )
