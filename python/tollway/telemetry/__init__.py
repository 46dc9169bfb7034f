"""Telemetry off the request path: OTLP traces, Prometheus metrics and the access log."""

from tollway.telemetry.exporter import Telemetry, now_ns
from tollway.telemetry.metrics import CONTENT_TYPE
from tollway.telemetry.record import Attempt, GuardrailRun, Record, ToolRun
from tollway.telemetry.settings import TelemetrySettings

__all__ = [
    "CONTENT_TYPE",
    "Attempt",
    "GuardrailRun",
    "Record",
    "Telemetry",
    "TelemetrySettings",
    "ToolRun",
    "now_ns",
]
