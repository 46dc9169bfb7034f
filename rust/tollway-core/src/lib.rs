//! Tollway's request-path engine, with no Python in it: config schema and compile,
//! authentication, metadata validation and admission. `tollway-py` wraps it for Python.

pub mod cache;
pub mod clock;
pub mod config;
pub mod engine;
pub mod guardrails;
pub mod hex;
pub mod json;
pub mod limits;
pub mod logs;
pub mod mcp;
pub mod metadata;
pub mod providers;
pub mod routing;
pub mod schema;
pub mod scrub;
pub mod server;
pub mod sigv4;
pub mod sse;
pub mod telemetry;
pub mod tokens;
pub mod when;

pub use engine::{Admission, Denial, Engine, Target};
pub use schema::ConfigError;
