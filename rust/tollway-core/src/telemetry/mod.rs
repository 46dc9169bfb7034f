//! Telemetry: the typed `otel`/`metrics` settings ([`config`]) and OTLP span encoding
//! ([`otlp`]), both off the request path.

pub mod config;
pub mod mcp_spans;
pub mod otlp;
