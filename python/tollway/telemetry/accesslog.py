"""One structured JSON access-log line per request, written from the background exporter.

The lines are built by the core's record fold (`tollway.engine.RecordFold`) in the same pass
that makes the metrics: request id, key name, subject, model, target, status, latency and the
usage and cost, never a header, key, prompt or answer.
"""

from __future__ import annotations

import logging

__all__ = ["AccessLog"]


class AccessLog:
    """Logs to `tollway.access` at `level`; costs nothing when that level is not enabled.

    Each log record holds the lines of one batch, one JSON object per line and request.
    """

    def __init__(self, level: int = logging.INFO, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("tollway.access")
        self._level = level

    @property
    def enabled(self) -> bool:
        return self._logger.isEnabledFor(self._level)

    def emit(self, lines: str) -> None:
        # One log call per batch: a logging call per line costs ~5 µs of the CPU the request
        # path shares with this task.
        if lines:
            self._logger.log(self._level, "%s", lines)
