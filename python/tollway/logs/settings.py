"""`gateway-settings.request_logs` (validated in Rust) with its defaults resolved."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = ["DEFAULT_PATH", "LogSettings"]

DEFAULT_PATH = "tollway-requests.duckdb"


class LogSettings(msgspec.Struct, frozen=True, kw_only=True):
    enabled: bool = True
    backend: str = "embedded"
    path: str = DEFAULT_PATH
    clickhouse_url: str | None = None
    clickhouse_table: str = "tollway_requests"
    retention_days: int = 30
    body_retention_days: int = 7
    # Bodies stay out unless asked for, like prompts in spans (otel.exclude_request_data).
    exclude_request_data: bool = True
    max_body_bytes: int = 65_536
    queue_size: int = 100_000
    batch_size: int = 10_000
    # How long a row waits in a worker before its batch is spooled (and the ingester's
    # pause between passes when nothing came; see tollway.logs.ingest).
    flush_interval_ms: int = 500
    # How often retention runs (and once at start).
    retention_interval_s: float = 3_600.0

    def __repr__(self) -> str:
        # A ClickHouse URL may carry credentials: only its presence is shown.
        return (
            f"LogSettings(enabled={self.enabled}, backend={self.backend!r}, path={self.path!r}, "
            f"clickhouse_url={'set' if self.clickhouse_url else None})"
        )

    __str__ = __repr__

    @property
    def body_cap(self) -> int:
        """Bytes of each body kept in the log; 0 when bodies are excluded."""
        return 0 if self.exclude_request_data else self.max_body_bytes

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> LogSettings:
        section = dict(section or {})
        retention = int(section.get("retention_days", 30))
        section.setdefault("body_retention_days", min(7, retention))
        return msgspec.convert(section, cls)
