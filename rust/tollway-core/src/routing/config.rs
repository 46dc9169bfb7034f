//! `type: gateway-load-balancing-config`, as published for this gateway family: a TrueFoundry
//! user's file loads unchanged (`name` and `model_configs` are accepted and validated). A rule
//! whose `when` leaves out `models` applies to any model the request names.

use crate::schema::{Errors, Fields};
use crate::when::{status_codes, When};
use serde_json::Value;

pub const DEFAULT_RETRY_CODES: [u16; 4] = [429, 500, 502, 503];
pub const DEFAULT_FALLBACK_CODES: [u16; 7] = [401, 403, 404, 429, 500, 502, 503];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Weight,
    Latency,
    Priority,
}

impl Strategy {
    pub const NAMES: [&'static str; 3] = [
        "weight-based-routing",
        "latency-based-routing",
        "priority-based-routing",
    ];

    fn parse(s: &str) -> Option<Self> {
        match s {
            "weight-based-routing" => Some(Self::Weight),
            "latency-based-routing" => Some(Self::Latency),
            "priority-based-routing" => Some(Self::Priority),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Retries after the first attempt on the same target.
    pub attempts: u32,
    pub delay_ms: u64,
    pub on_status_codes: Vec<u16>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 2,
            delay_ms: 100,
            on_status_codes: DEFAULT_RETRY_CODES.to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LbTarget {
    pub path: String,
    pub target: String,
    pub weight: Option<u32>,
    pub priority: Option<u32>,
    pub retry: RetryConfig,
    pub fallback_status_codes: Vec<u16>,
    pub fallback_candidate: bool,
    /// A JSON object merged into the request body sent to this target.
    pub override_params: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LbRule {
    pub source: String,
    pub path: String,
    pub id: String,
    pub strategy: Strategy,
    pub when: When,
    pub targets: Vec<LbTarget>,
}

pub fn parse(doc: &Value, out: &mut Vec<LbRule>, errs: &mut Errors) {
    let Some(f) = Fields::new(doc, "", &["type", "name", "rules", "model_configs"], errs) else {
        return;
    };
    f.string("name", errs);
    for (path, item) in f.list("model_configs", errs).unwrap_or_default() {
        parse_model_config(item, &path, errs);
    }
    if !f.has("rules") {
        errs.push("rules", "required field is missing");
    }
    for (path, item) in f.list("rules", errs).unwrap_or_default() {
        if let Some(rule) = parse_rule(item, &path, errs) {
            out.push(rule);
        }
    }
}

/// Older published files carry per-model limits and failure tolerance; they are checked for
/// shape so a typo is caught, and health uses the engine's fixed policy (DESIGN.md §4.2).
fn parse_model_config(v: &Value, path: &str, errs: &mut Errors) {
    let Some(f) = Fields::new(
        v,
        path,
        &["model", "usage_limits", "failure_tolerance"],
        errs,
    ) else {
        return;
    };
    f.req_string("model", errs);
    if let Some(u) = f.get("usage_limits") {
        let known = ["tokens_per_minute", "requests_per_minute"];
        if let Some(u) = Fields::new(u, &f.path("usage_limits"), &known, errs) {
            u.uint("tokens_per_minute", 0, u64::MAX, errs);
            u.uint("requests_per_minute", 0, u64::MAX, errs);
        }
    }
    if let Some(t) = f.get("failure_tolerance") {
        let known = [
            "allowed_failures_per_minute",
            "cooldown_period_minutes",
            "failure_status_codes",
        ];
        if let Some(t) = Fields::new(t, &f.path("failure_tolerance"), &known, errs) {
            t.uint("allowed_failures_per_minute", 0, u64::MAX, errs);
            t.uint("cooldown_period_minutes", 0, u64::MAX, errs);
            status_codes(&t, "failure_status_codes", errs);
        }
    }
}

fn parse_rule(v: &Value, path: &str, errs: &mut Errors) -> Option<LbRule> {
    let known = ["id", "type", "when", "load_balance_targets"];
    let f = Fields::new(v, path, &known, errs)?;
    let id = f.req_string("id", errs);
    let strategy = match f.require("type", errs) {
        Some(_) => f
            .choice("type", &Strategy::NAMES, errs)
            .and_then(|s| Strategy::parse(&s)),
        None => None,
    };
    let when = f
        .require("when", errs)
        .and_then(|w| When::parse(w, &f.path("when"), errs));
    // Without `models` a rule applies to whatever model the request names (matched by
    // subjects and metadata alone); an empty list would match nothing, which is a mistake.
    if when
        .as_ref()
        .is_some_and(|w| w.models.as_ref().is_some_and(Vec::is_empty))
    {
        errs.push(
            &f.path("when.models"),
            "an empty list matches no model; leave models out to match every model",
        );
    }
    if !f.has("load_balance_targets") {
        errs.push(&f.path("load_balance_targets"), "required field is missing");
    }
    let mut targets = Vec::new();
    for (tpath, item) in f.list("load_balance_targets", errs).unwrap_or_default() {
        if let Some(t) = parse_target(item, &tpath, errs) {
            targets.push(t);
        }
    }
    let (id, strategy, when) = (id?, strategy?, when?);
    let tpath = f.path("load_balance_targets");
    if targets.is_empty() {
        errs.push(&tpath, "needs at least one target");
    }
    if strategy == Strategy::Weight {
        let mut sum = 0u64;
        for t in &targets {
            match t.weight {
                Some(w) => sum += u64::from(w),
                None => errs.push(
                    &format!("{}.weight", t.path),
                    "required for weight-based-routing",
                ),
            }
        }
        if targets.iter().all(|t| t.weight.is_some()) && sum != 100 {
            errs.push(
                &tpath,
                format!("weights must add up to 100 (they add up to {sum})"),
            );
        }
    }
    Some(LbRule {
        source: errs.source().to_owned(),
        path: path.to_owned(),
        id,
        strategy,
        when,
        targets,
    })
}

fn parse_target(v: &Value, path: &str, errs: &mut Errors) -> Option<LbTarget> {
    let known = [
        "target",
        "weight",
        "priority",
        "retry_config",
        "fallback_status_codes",
        "fallback_candidate",
        "override_params",
    ];
    let f = Fields::new(v, path, &known, errs)?;
    let target = f.req_string("target", errs);
    let weight = f.uint("weight", 0, 100, errs).map(|w| w as u32);
    let priority = f.uint("priority", 0, 1_000_000, errs).map(|p| p as u32);
    let mut retry = RetryConfig::default();
    if let Some(r) = f.get("retry_config") {
        let known = ["attempts", "delay", "on_status_codes"];
        if let Some(r) = Fields::new(r, &f.path("retry_config"), &known, errs) {
            if let Some(a) = r.uint("attempts", 0, 10, errs) {
                retry.attempts = a as u32;
            }
            if let Some(d) = r.uint("delay", 0, 60_000, errs) {
                retry.delay_ms = d;
            }
            if let Some(codes) = status_codes(&r, "on_status_codes", errs) {
                retry.on_status_codes = codes;
            }
        }
    }
    let fallback_status_codes = status_codes(&f, "fallback_status_codes", errs)
        .unwrap_or_else(|| DEFAULT_FALLBACK_CODES.to_vec());
    let fallback_candidate = f.boolean("fallback_candidate", errs).unwrap_or(true);
    let override_params = match f.get("override_params") {
        Some(v @ Value::Object(_)) => {
            if let Some(Value::Object(m)) = Some(v) {
                for forbidden in ["model", "api_base", "base_url", "api_key", "stream"] {
                    if m.contains_key(forbidden) {
                        errs.push(
                            &format!("{path}.override_params.{forbidden}"),
                            "cannot be overridden",
                        );
                    }
                }
            }
            Some(v.clone())
        }
        Some(other) => {
            errs.push(
                &f.path("override_params"),
                format!("expected a mapping, got {}", crate::schema::kind(other)),
            );
            None
        }
        None => None,
    };
    Some(LbTarget {
        path: path.to_owned(),
        target: target?,
        weight,
        priority,
        retry,
        fallback_status_codes,
        fallback_candidate,
        override_params,
    })
}
