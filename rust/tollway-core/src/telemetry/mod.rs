//! Telemetry: the typed `otel`/`metrics` settings ([`config`]), what a batch of records adds to
//! the metrics and the access log ([`fold`]), the export queue ([`queue`]), OTLP span encoding
//! ([`otlp`], [`spans`]) and OTLP metrics encoding ([`metrics_otlp`]), all off the request path.

pub mod config;
pub mod fold;
pub mod mcp_spans;
pub mod metrics_otlp;
pub mod otlp;
pub mod queue;
pub mod record;
pub mod spans;
pub mod wire;
