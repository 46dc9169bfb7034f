//! Telemetry: the typed `otel`/`metrics` settings ([`config`]), OTLP span encoding
//! ([`otlp`]) and OTLP metrics encoding ([`metrics_otlp`]), all off the request path.

pub mod config;
pub mod metrics_otlp;
pub mod otlp;
