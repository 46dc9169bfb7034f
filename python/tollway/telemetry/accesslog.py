"""One structured JSON access-log line per request, written from the background exporter."""

from __future__ import annotations

import logging

import msgspec

from tollway.telemetry.record import Record

__all__ = ["AccessLog"]


class _Line(msgspec.Struct, omit_defaults=True):
    # Only these fields are logged: no headers, keys, prompts or completions, so no secret.
    request_id: str
    key_name: str
    subject: str
    model: str
    target: str
    status: int
    latency_ms: float
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 0
    ttft_ms: float | None = None
    error_type: str = ""


class AccessLog:
    """Logs to `tollway.access` at `level`; costs nothing when that level is not enabled.

    Each log record holds the lines of one batch, one JSON object per line and request.
    """

    def __init__(self, level: int = logging.INFO, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("tollway.access")
        self._level = level
        self._encode = msgspec.json.Encoder().encode

    @property
    def enabled(self) -> bool:
        return self._logger.isEnabledFor(self._level)

    def line(self, rec: Record) -> str:
        last = rec.attempts[-1] if rec.attempts else None
        return self._encode(
            _Line(
                request_id=rec.request_id,
                key_name=rec.key_name,
                subject=rec.subject,
                model=rec.model,
                target=last.target if last else "",
                status=rec.status,
                latency_ms=round((rec.end_ns - rec.start_ns) / 1e6, 3),
                input_tokens=sum(a.input_tokens or 0 for a in rec.attempts),
                output_tokens=sum(a.output_tokens or 0 for a in rec.attempts),
                cost_usd=sum(a.cost_usd or 0.0 for a in rec.attempts),
                attempts=len(rec.attempts),
                ttft_ms=last.ttft_ms if last else None,
                error_type=rec.error_type or (last.error_type if last else ""),
            )
        ).decode()

    def write(self, records: list[Record]) -> None:
        if not records or not self.enabled:
            return
        # One log call per batch, one JSON line per request in it: a logging call per line
        # costs ~5 µs of the CPU the request path shares with this task.
        self._logger.log(self._level, "%s", "\n".join(map(self.line, records)))
