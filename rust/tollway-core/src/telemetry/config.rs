//! The schema of `gateway-settings.otel` and `gateway-settings.metrics`.
//!
//! Header values are exporter credentials (`Authorization: Basic ...`, `x-api-key`): like every
//! other field read through [`Fields`], their values never appear in an error message.

use crate::schema::{Errors, Fields};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtelEncoding {
    Proto,
    Json,
}

impl OtelEncoding {
    pub fn name(self) -> &'static str {
        match self {
            Self::Proto => "proto",
            Self::Json => "json",
        }
    }
}

/// The default of every telemetry setting, written once: the parser starts from these and
/// the binding hands them to Python's `OTEL_*` environment overlay (file, then environment,
/// then these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelemetryDefaults {
    pub service_name: &'static str,
    pub encoding: OtelEncoding,
    /// Prompts and answers leave the gateway only when asked (GenAI content is opt-in).
    pub exclude_request_data: bool,
    /// Smaller than the SDK's 512: a batch is encoded on the request path's CPU (~6 us a
    /// record), so 128 bounds that stall to about 0.8 ms.
    pub batch_size: u64,
    pub queue_size: u64,
    pub export_timeout_ms: u64,
    pub schedule_delay_ms: u64,
    /// How often the metrics are pushed (the OTEL SDK's default: 60 s).
    pub metrics_export_interval_ms: u64,
    /// Distinct values kept per metadata label; later values are reported as `other`.
    pub metadata_value_cap: u64,
}

pub const DEFAULTS: TelemetryDefaults = TelemetryDefaults {
    service_name: "tollway",
    encoding: OtelEncoding::Proto,
    exclude_request_data: true,
    batch_size: 128,
    queue_size: 4096,
    export_timeout_ms: 10_000,
    schedule_delay_ms: 1_000,
    metrics_export_interval_ms: 60_000,
    metadata_value_cap: 100,
};

/// Unset fields stay `None` so the `OTEL_*` environment can fill them (the config file wins).
#[derive(Clone, PartialEq)]
pub struct OtelSettings {
    pub traces_endpoint: Option<String>,
    pub headers: Vec<(String, String)>,
    pub resource_attributes: Vec<(String, String)>,
    pub service_name: Option<String>,
    pub encoding: Option<OtelEncoding>,
    pub exclude_request_data: bool,
    pub batch_size: u64,
    pub queue_size: u64,
    pub export_timeout_ms: u64,
    pub schedule_delay_ms: u64,
    /// OTLP/HTTP metrics push (`.../v1/metrics`); `None`: only `/metrics` is served.
    pub metrics_endpoint: Option<String>,
    /// Headers of the metrics push; empty: the traces `headers` are used.
    pub metrics_headers: Vec<(String, String)>,
    /// How often the metrics are pushed (the OTEL SDK's default: 60 s).
    pub metrics_export_interval_ms: u64,
}

impl Default for OtelSettings {
    fn default() -> Self {
        Self {
            traces_endpoint: None,
            headers: Vec::new(),
            resource_attributes: Vec::new(),
            service_name: None,
            encoding: None,
            exclude_request_data: DEFAULTS.exclude_request_data,
            batch_size: DEFAULTS.batch_size,
            queue_size: DEFAULTS.queue_size,
            export_timeout_ms: DEFAULTS.export_timeout_ms,
            schedule_delay_ms: DEFAULTS.schedule_delay_ms,
            metrics_endpoint: None,
            metrics_headers: Vec::new(),
            metrics_export_interval_ms: DEFAULTS.metrics_export_interval_ms,
        }
    }
}

/// Hand-written so that `{:?}` of a config never prints an exporter credential.
impl std::fmt::Debug for OtelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OtelSettings")
            .field("traces_endpoint", &self.traces_endpoint)
            .field("headers", &header_names)
            .field("resource_attributes", &self.resource_attributes)
            .field("service_name", &self.service_name)
            .field("encoding", &self.encoding)
            .field("exclude_request_data", &self.exclude_request_data)
            .field("batch_size", &self.batch_size)
            .field("queue_size", &self.queue_size)
            .field("export_timeout_ms", &self.export_timeout_ms)
            .field("schedule_delay_ms", &self.schedule_delay_ms)
            .field("metrics_endpoint", &self.metrics_endpoint)
            .field(
                "metrics_headers",
                &self
                    .metrics_headers
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field(
                "metrics_export_interval_ms",
                &self.metrics_export_interval_ms,
            )
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    pub metadata_logging_keys: Vec<String>,
    /// Distinct values kept per metadata label; later values are reported as `other`.
    pub metadata_value_cap: u64,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            metadata_logging_keys: Vec::new(),
            metadata_value_cap: DEFAULTS.metadata_value_cap,
        }
    }
}

const OTEL_FIELDS: [&str; 13] = [
    "traces_endpoint",
    "headers",
    "resource_attributes",
    "service_name",
    "encoding",
    "exclude_request_data",
    "batch_size",
    "queue_size",
    "export_timeout_ms",
    "schedule_delay_ms",
    "metrics_endpoint",
    "metrics_headers",
    "metrics_export_interval_ms",
];

fn is_token(s: &str) -> bool {
    // RFC 9110 token characters: what an HTTP header name may be made of.
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn endpoint(f: &Fields<'_>, key: &str, signal: &str, errs: &mut Errors) -> Option<String> {
    let url = f.string(key, errs)?;
    if url.starts_with("http://") || url.starts_with("https://") {
        return Some(url);
    }
    // The URL may carry a token in its query: not echoed.
    errs.push(
        &f.path(key),
        format!(
            "expected a full http:// or https:// URL (e.g. https://collector:4318/v1/{signal})"
        ),
    );
    None
}

fn headers(f: &Fields<'_>, key: &str, errs: &mut Errors) -> Vec<(String, String)> {
    let Some(headers) = f.string_map(key, errs) else {
        return Vec::new();
    };
    for (name, value) in &headers {
        if !is_token(name) {
            errs.push(&f.path(key), "a header name is not a valid HTTP token");
        } else if value.contains(['\r', '\n']) {
            errs.push(
                &crate::schema::join(&f.path(key), name),
                "a header value may not contain a line break",
            );
        }
    }
    headers
}

/// `gateway-settings.otel`; `path` is where it sits (`otel`).
pub fn parse_otel(v: &Value, path: &str, errs: &mut Errors) -> Option<OtelSettings> {
    let f = Fields::new(v, path, &OTEL_FIELDS, errs)?;
    let mut out = OtelSettings::default();
    let before = errs.list.len();
    out.traces_endpoint = endpoint(&f, "traces_endpoint", "traces", errs);
    out.metrics_endpoint = endpoint(&f, "metrics_endpoint", "metrics", errs);
    out.headers = headers(&f, "headers", errs);
    out.metrics_headers = headers(&f, "metrics_headers", errs);
    if let Some(n) = f.uint("metrics_export_interval_ms", 100, 3_600_000, errs) {
        out.metrics_export_interval_ms = n;
    }
    if let Some(attrs) = f.string_map("resource_attributes", errs) {
        out.resource_attributes = attrs;
    }
    out.service_name = f.string("service_name", errs);
    if out.service_name.as_deref() == Some("") {
        errs.push(&f.path("service_name"), "may not be empty");
    }
    out.encoding = f
        .choice("encoding", &["proto", "json"], errs)
        .map(|s| match s.as_str() {
            "json" => OtelEncoding::Json,
            _ => OtelEncoding::Proto,
        });
    if let Some(b) = f.boolean("exclude_request_data", errs) {
        out.exclude_request_data = b;
    }
    if let Some(n) = f.uint("batch_size", 1, 65_536, errs) {
        out.batch_size = n;
    }
    if let Some(n) = f.uint("queue_size", 1, 1_000_000, errs) {
        out.queue_size = n;
    }
    if let Some(n) = f.uint("export_timeout_ms", 100, 600_000, errs) {
        out.export_timeout_ms = n;
    }
    if let Some(n) = f.uint("schedule_delay_ms", 10, 60_000, errs) {
        out.schedule_delay_ms = n;
    }
    if out.batch_size > out.queue_size {
        errs.push(&f.path("batch_size"), "may not exceed queue_size");
    }
    (errs.list.len() == before).then_some(out)
}

/// `gateway-settings.metrics`; `path` is where it sits (`metrics`).
pub fn parse_metrics(v: &Value, path: &str, errs: &mut Errors) -> Option<MetricsSettings> {
    let f = Fields::new(
        v,
        path,
        &["metadata_logging_keys", "metadata_value_cap"],
        errs,
    )?;
    let mut out = MetricsSettings::default();
    let before = errs.list.len();
    if let Some(keys) = f.string_list("metadata_logging_keys", errs) {
        for (i, k) in keys.iter().enumerate() {
            // Each key becomes part of a Prometheus label name.
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                errs.push(
                    &crate::schema::index(&f.path("metadata_logging_keys"), i),
                    format!("'{k}' must be letters, digits and underscores (it becomes a label)"),
                );
            } else if keys[..i].contains(k) {
                errs.push(
                    &crate::schema::index(&f.path("metadata_logging_keys"), i),
                    format!("'{k}' is listed twice"),
                );
            }
        }
        out.metadata_logging_keys = keys;
    }
    if let Some(n) = f.uint("metadata_value_cap", 1, 10_000, errs) {
        out.metadata_value_cap = n;
    }
    (errs.list.len() == before).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_full_otel_section_is_read() {
        let v = json!({
            "traces_endpoint": "https://otlp.example.com/v1/traces",
            "headers": {"Authorization": "Basic c2VjcmV0", "Langsmith-Project": "gw"},
            "resource_attributes": {"env": "prod", "region": "eu"},
            "service_name": "edge-gw",
            "encoding": "json",
            "exclude_request_data": true,
            "batch_size": 100,
            "queue_size": 1000,
            "metrics_endpoint": "https://prom.example.com/api/v1/otlp/v1/metrics",
            "metrics_headers": {"Authorization": "Bearer bWV0cmljcw"},
        });
        let mut errs = Errors::new("");
        let s = parse_otel(&v, "otel", &mut errs).unwrap();
        assert!(errs.is_empty());
        assert_eq!(s.encoding, Some(OtelEncoding::Json));
        assert_eq!(s.headers[1], ("Langsmith-Project".into(), "gw".into()));
        assert_eq!(s.service_name.as_deref(), Some("edge-gw"));
        assert!(s.exclude_request_data);
        assert_eq!(s.schedule_delay_ms, 1_000);
        assert!(!format!("{s:?}").contains("c2VjcmV0"));
        assert!(!format!("{s:?}").contains("bWV0cmljcw"));
        assert_eq!(s.metrics_export_interval_ms, 60_000);
        assert!(s.metrics_endpoint.is_some());
        let bad = json!({"metrics_endpoint": "prom:9090", "metrics_export_interval_ms": 5});
        assert!(parse_otel(&bad, "otel", &mut errs).is_none());
        assert_eq!(errs.list.len(), 2);
    }

    #[test]
    fn errors_name_paths_and_never_echo_header_values() {
        let v = json!({
            "traces_endpoint": "collector:4318?token=hunter2",
            "headers": {"Authorization": 12, "x-api-key": "hunter2\r\nX: y"},
            "encoding": "grpc",
            "batch_size": 0,
            "colour": 1,
        });
        let mut errs = Errors::new("");
        assert!(parse_otel(&v, "otel", &mut errs).is_none());
        let shown: Vec<String> = errs.list.iter().map(ToString::to_string).collect();
        assert!(shown.iter().all(|s| !s.contains("hunter2")), "{shown:?}");
        for p in [
            "otel.colour",
            "otel.traces_endpoint",
            "otel.headers.Authorization",
            "otel.headers.x-api-key",
            "otel.encoding: 'grpc'",
            "otel.batch_size",
        ] {
            assert!(shown.iter().any(|s| s.starts_with(p)), "{p} in {shown:?}");
        }
    }

    #[test]
    fn metadata_keys_must_be_label_safe() {
        let v = json!({"metadata_logging_keys": ["team", "cost-center", "team"]});
        let mut errs = Errors::new("");
        assert!(parse_metrics(&v, "metrics", &mut errs).is_none());
        assert_eq!(errs.list.len(), 2);
        let ok = parse_metrics(&json!({"metadata_logging_keys": ["team"]}), "m", &mut errs);
        assert_eq!(ok.unwrap().metadata_value_cap, 100);
    }
}
