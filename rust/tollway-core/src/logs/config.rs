//! `gateway-settings.request_logs` and the `gateway-alerts-config` document: checked here
//! (unknown fields are errors with their paths), handed to Python as validated JSON.

use crate::schema::{Errors, Fields};
use serde_json::Value;

/// What the documents said about logs and alerts, until every document is read.
#[derive(Debug, Default, Clone)]
pub struct LogsConfig {
    /// The validated `gateway-alerts-config` document, and where it came from.
    alerts: Option<(String, Value)>,
    /// Rule ids each alerts rule names: (source, path, kind, id).
    refs: Vec<(String, String, &'static str, String)>,
}

const CHANNEL_KINDS: [&str; 3] = ["slack", "webhook", "email"];

fn http_url(f: &Fields<'_>, name: &str, errs: &mut Errors) -> Option<String> {
    let url = f.string(name, errs)?;
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
        errs.push(&f.path(name), "must be an http:// or https:// URL");
    }
    Some(url)
}

/// `gateway-settings.request_logs`; `Some` when it is valid.
pub fn parse_request_logs(v: &Value, path: &str, errs: &mut Errors) -> Option<()> {
    let known = [
        "enabled",
        "backend",
        "path",
        "clickhouse_url",
        "clickhouse_table",
        "retention_days",
        "body_retention_days",
        "exclude_request_data",
        "max_body_bytes",
        "queue_size",
        "batch_size",
        "flush_interval_ms",
    ];
    let before = errs.list.len();
    let f = Fields::new(v, path, &known, errs)?;
    f.boolean("enabled", errs);
    f.boolean("exclude_request_data", errs);
    let backend = f.choice("backend", &["embedded", "clickhouse"], errs);
    f.string("path", errs);
    let url = http_url(&f, "clickhouse_url", errs);
    if backend.as_deref() == Some("clickhouse") && url.is_none() {
        errs.push(
            &f.path("clickhouse_url"),
            "required when backend is clickhouse",
        );
    }
    if let Some(table) = f.string("clickhouse_table", errs) {
        let ok = !table.is_empty()
            && table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        if !ok {
            errs.push(
                &f.path("clickhouse_table"),
                "letters, digits, '_' and '.' only",
            );
        }
    }
    let days = f.uint("retention_days", 1, 36_500, errs);
    if let Some(body) = f.uint("body_retention_days", 0, 36_500, errs) {
        if body > days.unwrap_or(30) {
            errs.push(
                &f.path("body_retention_days"),
                "must not be longer than retention_days",
            );
        }
    }
    f.uint("max_body_bytes", 0, 16 << 20, errs);
    f.uint("queue_size", 1, 10_000_000, errs);
    f.uint("batch_size", 1, 100_000, errs);
    f.uint("flush_interval_ms", 10, 600_000, errs);
    (errs.list.len() == before).then_some(())
}

/// A `gateway-alerts-config` document (at most one).
pub fn parse_alerts(doc: &Value, out: &mut LogsConfig, errs: &mut Errors) {
    if out.alerts.is_some() {
        errs.push("type", "gateway-alerts-config may appear only once");
    }
    let before = errs.list.len();
    let Some(f) = Fields::new(doc, "", &["type", "name", "channels", "rules"], errs) else {
        return;
    };
    let mut channels: Vec<String> = Vec::new();
    for (path, item) in f.list("channels", errs).unwrap_or_default() {
        if let Some(name) = parse_channel(item, &path, errs) {
            if channels.contains(&name) {
                errs.push(&path, format!("duplicate channel name '{name}'"));
            }
            channels.push(name);
        }
    }
    let mut ids: Vec<String> = Vec::new();
    for (path, item) in f.list("rules", errs).unwrap_or_default() {
        let known = [
            "id",
            "kind",
            "budget",
            "rate_limit",
            "thresholds",
            "refusals_per_minute",
            "notify",
        ];
        let Some(r) = Fields::new(item, &path, &known, errs) else {
            continue;
        };
        if let Some(id) = r.req_string("id", errs) {
            if ids.contains(&id) {
                errs.push(&r.path("id"), format!("duplicate rule id '{id}'"));
            }
            ids.push(id);
        }
        let kind = if r.require("kind", errs).is_some() {
            r.choice("kind", &["budget", "rate_limit"], errs)
        } else {
            None
        };
        for (field, other) in [("budget", "rate_limit"), ("rate_limit", "budget")] {
            if kind.as_deref() == Some(field) {
                if let Some(id) = r.req_string(field, errs) {
                    let kind = if field == "budget" {
                        "budget"
                    } else {
                        "rate_limit"
                    };
                    out.refs
                        .push((errs.source().to_owned(), r.path(field), kind, id));
                }
                if r.has(other) {
                    errs.push(&r.path(other), format!("not used by a {field} rule"));
                }
            }
        }
        if kind.as_deref() == Some("budget") {
            let path = r.path("thresholds");
            match r.get("thresholds") {
                Some(Value::Array(items)) if !items.is_empty() => {
                    for (i, t) in items.iter().enumerate() {
                        if !t.as_f64().is_some_and(|p| p > 0.0 && p <= 1000.0) {
                            errs.push(
                                &crate::schema::index(&path, i),
                                "a percent of the budget, above 0 and at most 1000",
                            );
                        }
                    }
                }
                Some(_) => errs.push(&path, "expected a non-empty list of percents"),
                None => {}
            }
        }
        if kind.as_deref() == Some("rate_limit") && r.require("refusals_per_minute", errs).is_some()
        {
            r.uint("refusals_per_minute", 1, 1_000_000, errs);
        }
        for (i, name) in r
            .string_list("notify", errs)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            if !channels.contains(name) {
                errs.push(
                    &crate::schema::index(&r.path("notify"), i),
                    format!("no channel named '{name}'"),
                );
            }
        }
        if !r.has("notify") {
            errs.push(&r.path("notify"), "required field is missing");
        }
    }
    if errs.list.len() == before {
        out.alerts = Some((errs.source().to_owned(), doc.clone()));
    }
}

fn parse_channel(item: &Value, path: &str, errs: &mut Errors) -> Option<String> {
    let known = ["name", "kind", "url", "smtp", "from", "to"];
    let f = Fields::new(item, path, &known, errs)?;
    let name = f.req_string("name", errs);
    let kind = if f.require("kind", errs).is_some() {
        f.choice("kind", &CHANNEL_KINDS, errs)
    } else {
        None
    };
    let url = http_url(&f, "url", errs);
    match kind.as_deref() {
        Some("slack" | "webhook") if url.is_none() => {
            errs.push(&f.path("url"), "required for slack and webhook channels");
        }
        Some("email") => {
            let smtp = f.require("smtp", errs);
            if let Some(s) = smtp.and_then(|s| {
                let known = [
                    "host",
                    "port",
                    "username",
                    "password",
                    "starttls",
                    "timeout_ms",
                ];
                Fields::new(s, &f.path("smtp"), &known, errs)
            }) {
                s.req_string("host", errs);
                s.uint("port", 1, 65535, errs);
                s.string("username", errs);
                s.string("password", errs);
                s.boolean("starttls", errs);
                s.uint("timeout_ms", 1, 600_000, errs);
            }
            f.req_string("from", errs);
            if f.require("to", errs).is_some() {
                f.string_list("to", errs);
            }
        }
        _ => {}
    }
    name
}

/// After every document is read: alerts rules must name existing budget and rate-limit
/// rules (`budget_ids`, `rate_limit_ids`); the valid document joins the sections handed to
/// Python (`telemetry_json`).
pub fn finish(
    logs: &mut LogsConfig,
    budget_ids: &[&str],
    rate_limit_ids: &[&str],
    telemetry_json: &mut String,
    errs: &mut Errors,
) {
    for (source, path, kind, id) in std::mem::take(&mut logs.refs) {
        let ids = if kind == "budget" {
            budget_ids
        } else {
            rate_limit_ids
        };
        if !ids.contains(&id.as_str()) {
            errs.set_source(source);
            errs.push(&path, format!("no {kind} rule with id '{id}'"));
            logs.alerts = None;
        }
    }
    errs.set_source("");
    if let Some((_, doc)) = logs.alerts.take() {
        if let Ok(Value::Object(mut sections)) = serde_json::from_str(telemetry_json) {
            sections.insert("alerts".to_owned(), doc);
            *telemetry_json = Value::Object(sections).to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::Engine;
    use serde_json::json;

    fn errors(docs: serde_json::Value) -> Vec<String> {
        let docs: Vec<_> = docs
            .as_array()
            .unwrap()
            .iter()
            .map(|d| json!({"source": "f.yaml", "doc": d}))
            .collect();
        match Engine::compile(&json!(docs)) {
            Ok(_) => vec![],
            Err(list) => list.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn request_logs_section_reports_unknown_and_bad_fields_with_paths() {
        let errs = errors(json!([{"type": "gateway-settings", "request_logs": {
            "backend": "clickhouse", "retention_days": 0, "colour": 1}}]));
        assert!(errs
            .iter()
            .any(|e| e.contains("request_logs.colour: unknown field")));
        assert!(errs
            .iter()
            .any(|e| e.contains("request_logs.clickhouse_url: required")));
        assert!(errs
            .iter()
            .any(|e| e.contains("request_logs.retention_days")));
    }

    #[test]
    fn alerts_rules_must_name_known_rules_and_channels() {
        let errs = errors(json!([{"type": "gateway-alerts-config",
            "channels": [{"name": "ops", "kind": "webhook", "url": "http://127.0.0.1:9/x"}],
            "rules": [{"id": "b", "kind": "budget", "budget": "nope", "thresholds": [80],
                       "notify": ["ops", "pager"]}]}]));
        assert!(errs
            .iter()
            .any(|e| e.contains("rules[0].notify[1]: no channel named 'pager'")));
        assert!(errs
            .iter()
            .any(|e| e.contains("rules[0].budget: no budget rule with id 'nope'")));
    }

    #[test]
    fn valid_alerts_reach_the_python_sections() {
        let docs = json!([{"source": "a", "doc": {"type": "gateway-alerts-config",
            "channels": [{"name": "ops", "kind": "slack", "url": "https://hooks.example/x"}],
            "rules": []}}]);
        let engine = Engine::compile(&docs).unwrap();
        let sections: serde_json::Value = serde_json::from_str(&engine.telemetry_json).unwrap();
        assert_eq!(sections["alerts"]["channels"][0]["name"], "ops");
    }
}
