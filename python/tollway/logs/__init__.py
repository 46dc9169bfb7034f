"""The request log: rows written off the request path from telemetry records, an embedded
(DuckDB) or ClickHouse store, retention, the analytics API, the `/ui` page and alerts."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tollway.engine import Engine
from tollway.logs.alerts import Alerts
from tollway.logs.api import Analytics
from tollway.logs.events import EventStore
from tollway.logs.settings import LogSettings
from tollway.logs.writer import LogWriter, Sink, Store
from tollway.telemetry import Telemetry

__all__ = [
    "Alerts",
    "Analytics",
    "LogSettings",
    "LogWriter",
    "RequestLogging",
    "resolve_path",
    "setup",
]


@dataclass
class RequestLogging:
    """What the gateway starts and stops: the log's writer, the API, alerts (if configured)."""

    settings: LogSettings
    writer: LogWriter | None
    analytics: Analytics
    alerts: Alerts | None = None

    def start(self, session: aiohttp.ClientSession, engine: Callable[[], Engine]) -> None:
        if self.writer is not None:
            self.writer.start()
        if self.alerts is not None:
            self.alerts.engine = engine
            self.alerts.start(session)

    async def stop(self) -> None:
        if self.alerts is not None:
            await self.alerts.stop()
        if self.writer is not None:
            await asyncio.to_thread(self.writer.stop, 5.0)


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


def make_store(settings: LogSettings, config_path: str | None) -> tuple[Store, Sink, str, bool]:
    """(store to query, sink for the writer, table, speaks ClickHouse SQL) for the backend."""
    if settings.backend == "clickhouse" and settings.clickhouse_url:
        from tollway.logs.clickhouse import ClickHouseStore

        ch = ClickHouseStore(settings.clickhouse_url, settings.clickhouse_table)
        return ch, ch, settings.clickhouse_table, True
    from tollway.logs.spool import Spool
    from tollway.logs.store import TABLE, EmbeddedStore

    path = resolve_path(settings.path, config_path)
    return EmbeddedStore(path), Spool(path, settings), TABLE, False


def setup(
    sections: Mapping[str, Any], telemetry: Telemetry, config_path: str | None
) -> RequestLogging | None:
    """Hooks the request log and alerts into `telemetry` as configured; None when neither is
    on. Crossings live in `<log path>.events.sqlite`, shared by the workers."""
    settings = LogSettings.from_config(sections.get("request_logs"))
    alerts_config = sections.get("alerts")
    if not settings.enabled and not alerts_config:
        return None
    writer = None
    analytics = Analytics(None, "", False)
    if settings.enabled:
        store, sink, table, clickhouse = make_store(settings, config_path)
        writer = LogWriter(settings, [sink], telemetry.metrics)
        telemetry.sinks.append(writer.submit_encoded)
        telemetry.log_body_cap = settings.body_cap
        analytics = Analytics(store, table, clickhouse)
    alerts = None
    if alerts_config:
        events = EventStore(resolve_path(settings.path, config_path) + ".events.sqlite")
        alerts = Alerts(alerts_config, events, telemetry.metrics)
        telemetry.sinks.append(alerts.observe_encoded)
        analytics.events = events.list
    return RequestLogging(settings, writer, analytics, alerts)
