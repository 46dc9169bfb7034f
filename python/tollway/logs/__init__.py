"""The request log: rows written off the request path from telemetry records, an embedded
(DuckDB) or ClickHouse store, retention, the analytics API, the `/ui` page and alerts."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tollway.logs.api import Analytics
from tollway.logs.settings import LogSettings
from tollway.logs.writer import LogWriter, Store
from tollway.telemetry import Telemetry

__all__ = ["Analytics", "LogSettings", "LogWriter", "RequestLogging", "resolve_path", "setup"]


@dataclass
class RequestLogging:
    settings: LogSettings
    writer: LogWriter
    analytics: Analytics


def resolve_path(path: str, config_path: str | None) -> str:
    """A relative path is next to the config (or in the temp dir if that is read-only)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return str(p)
    base = Path(config_path or ".").resolve()
    base = base if base.is_dir() else base.parent
    if not os.access(base, os.W_OK):
        base = Path(tempfile.gettempdir())
    return str(base / p)


def make_store(settings: LogSettings, config_path: str | None) -> tuple[Store, str, bool]:
    """(store, table, speaks ClickHouse SQL) for the configured backend."""
    if settings.backend == "clickhouse" and settings.clickhouse_url:
        from tollway.logs.clickhouse import ClickHouseStore

        ch = ClickHouseStore(settings.clickhouse_url, settings.clickhouse_table)
        return ch, settings.clickhouse_table, True
    from tollway.logs.store import TABLE, EmbeddedStore

    return EmbeddedStore(resolve_path(settings.path, config_path)), TABLE, False


def setup(
    sections: Mapping[str, Any], telemetry: Telemetry, config_path: str | None
) -> RequestLogging | None:
    """Hooks a request log into `telemetry` as configured; None when it is switched off."""
    settings = LogSettings.from_config(sections.get("request_logs"))
    if not settings.enabled:
        return None
    store, table, clickhouse = make_store(settings, config_path)
    writer = LogWriter(settings, [store], telemetry.metrics)
    telemetry.sinks.append(writer.submit)
    telemetry.log_body_cap = settings.body_cap
    return RequestLogging(settings, writer, Analytics(store, table, clickhouse))
