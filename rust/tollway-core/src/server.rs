//! The `server` section of `gateway-settings`: the listener, the limits on what a client may
//! send and a provider may answer, and the timeouts (DESIGN.md §4.2, docs/security.md).

use crate::schema::{Errors, Fields};
use serde_json::Value;

pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// A provider answer larger than this is not relayed (a lying or broken upstream).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 20 * 1024 * 1024;
/// The request line and headers together; past this Granian answers 431.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub workers: u32,
    pub max_body_bytes: u64,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub max_request_timeout_ms: u64,
    /// After SIGTERM: how long `/readyz` says 503 while still serving, so the load
    /// balancer deregisters the instance before the listener closes.
    pub drain_delay_s: u64,
    /// Then: how long in-flight requests and streams may take to finish.
    pub shutdown_grace_s: u64,
    /// Granian: `auto`, `1` or `2`.
    pub http: String,
    pub backpressure: Option<u64>,
    pub keep_alive: bool,
    pub max_response_bytes: u64,
    pub max_header_bytes: u64,
    /// How long a client may take to send its whole body before a 408.
    pub body_read_timeout_ms: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 8080,
            workers: 1,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 600_000,
            max_request_timeout_ms: 3_600_000,
            drain_delay_s: 5,
            shutdown_grace_s: 30,
            http: "auto".to_owned(),
            backpressure: None,
            keep_alive: true,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            body_read_timeout_ms: 30_000,
        }
    }
}

/// Reads `server` into `out` (defaults stay where a field is absent), collecting errors.
pub(crate) fn parse(server: &Value, out: &mut ServerSettings, errs: &mut Errors) {
    let Some(s) = Fields::new(
        server,
        "server",
        &[
            "host",
            "port",
            "workers",
            "max_body_bytes",
            "timeouts",
            "drain_delay_s",
            "shutdown_grace_s",
            "http",
            "backpressure",
            "keep_alive",
            "max_response_bytes",
            "max_header_bytes",
        ],
        errs,
    ) else {
        return;
    };
    if let Some(h) = s.string("host", errs) {
        out.host = h;
    }
    if let Some(p) = s.uint("port", 0, 65535, errs) {
        out.port = u16::try_from(p).unwrap_or(out.port);
    }
    if let Some(w) = s.uint("workers", 1, 1024, errs) {
        out.workers = u32::try_from(w).unwrap_or(1);
    }
    if let Some(m) = s.uint("max_body_bytes", 1024, 1 << 34, errs) {
        out.max_body_bytes = m;
    }
    if let Some(v) = s.uint("drain_delay_s", 0, 3600, errs) {
        out.drain_delay_s = v;
    }
    if let Some(v) = s.uint("shutdown_grace_s", 0, 86_400, errs) {
        out.shutdown_grace_s = v;
    }
    if let Some(v) = s.choice("http", &["auto", "1", "2"], errs) {
        out.http = v;
    }
    out.backpressure = s.uint("backpressure", 1, 1_000_000, errs);
    if let Some(v) = s.boolean("keep_alive", errs) {
        out.keep_alive = v;
    }
    if let Some(m) = s.uint("max_response_bytes", 1024, 1 << 34, errs) {
        out.max_response_bytes = m;
    }
    // Granian's HTTP/1 buffer holds the whole head; it cannot be smaller than 8 KiB.
    if let Some(m) = s.uint("max_header_bytes", 8192, 16 << 20, errs) {
        out.max_header_bytes = m;
    }
    if let Some(t) = s.get("timeouts") {
        let known = ["connect_ms", "request_ms", "max_request_ms", "body_read_ms"];
        if let Some(t) = Fields::new(t, "server.timeouts", &known, errs) {
            if let Some(v) = t.uint("connect_ms", 1, 600_000, errs) {
                out.connect_timeout_ms = v;
            }
            if let Some(v) = t.uint("request_ms", 1, 86_400_000, errs) {
                out.request_timeout_ms = v;
            }
            if let Some(v) = t.uint("max_request_ms", 1, 86_400_000, errs) {
                out.max_request_timeout_ms = v;
            }
            if let Some(v) = t.uint("body_read_ms", 1, 3_600_000, errs) {
                out.body_read_timeout_ms = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(v: &Value) -> (ServerSettings, Vec<String>) {
        let mut out = ServerSettings::default();
        let mut errs = Errors::new("s.yaml");
        parse(v, &mut out, &mut errs);
        (out, errs.list.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn limits_default_to_the_documented_values() {
        let (s, errs) = parsed(&json!({}));
        assert!(errs.is_empty());
        assert_eq!(s.max_header_bytes, 64 * 1024);
        assert_eq!(s.max_response_bytes, 20 * 1024 * 1024);
        assert_eq!(s.body_read_timeout_ms, 30_000);
    }

    #[test]
    fn limits_and_the_body_read_timeout_are_read_and_bounded() {
        let v = json!({"max_header_bytes": 16384, "max_response_bytes": 65536,
                       "timeouts": {"body_read_ms": 800}});
        let (s, errs) = parsed(&v);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            (
                s.max_header_bytes,
                s.max_response_bytes,
                s.body_read_timeout_ms
            ),
            (16384, 65536, 800)
        );
        // Granian's buffer cannot hold less than 8 KiB; a 0 timeout would refuse every body.
        let v = json!({"max_header_bytes": 4096, "timeouts": {"body_read_ms": 0}});
        let (_, errs) = parsed(&v);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("server.max_header_bytes"), "{errs:?}");
        assert!(errs[1].contains("server.timeouts.body_read_ms"), "{errs:?}");
    }
}
