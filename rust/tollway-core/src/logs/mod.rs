//! The request log and alerts: their config schema (the log itself is written in Python,
//! off the request path, from the telemetry record).

pub mod config;

pub use config::LogsConfig;
