//! Fuzz regression targets, run by `cargo test`: the parsers of client headers
//! (`X-TFY-METADATA`, `X-TFY-GUARDRAILS`) and the config compiler never panic, whatever the
//! input, and what they accept keeps its invariants. proptest stands in for cargo-fuzz (which
//! needs a nightly toolchain CI does not have). Each target also replays its corpus,
//! `tests/corpus/<target>/*`: inputs worth keeping for ever (edges, past findings); add a file
//! there when a run finds something. The stream parsers' targets are in `fuzz_streams.rs`, the
//! guardrail scanners' in `fuzz_guardrails.rs`; the long run of all three (`TOLLWAY_FUZZ_CASES`)
//! is in docs/security.md, "Fuzzing".
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};
use tollway_core::config::METADATA_VALUE_MAX_CHARS;
use tollway_core::metadata::{self, MAX_KEYS};
use tollway_core::Engine;

use common::{cases, corpus};

const KEY: &str = "Bearer fuzz-key-0123456789";

/// Any JSON value, nested a few levels, with the awkward leaves (unicode, huge numbers).
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
        "[a-z_.*/-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{0,12}|.{0,8}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A small config with every document type, the base the mutation target changes.
fn base_docs() -> Value {
    json!([
        {"source": "f#1", "doc": {"type": "gateway-settings",
            "server": {"port": 8080, "max_body_bytes": 65536, "max_response_bytes": 1048576,
                       "timeouts": {"connect_ms": 100, "body_read_ms": 1000}},
            "metrics": {"metadata_logging_keys": ["team"]}}},
        {"source": "f#2", "doc": {"type": "provider-account", "name": "a",
            "provider": "openai-compatible", "base_url": "http://127.0.0.1:1/v1",
            "api_key": "sk-fuzz", "headers": {"x-h": "v"},
            "models": ["m1", {"name": "m2", "model_id": "gpt-4o",
                              "input_cost_per_million": 1.0, "output_cost_per_million": 2.0}]}},
        {"source": "f#3", "doc": {"type": "gateway-keys", "keys": [
            {"name": "k", "key": "fuzz-key-0123456789", "subject": "user:alice",
             "allowed_models": ["a/*", "virtual"], "metadata": {"team": "ml"}}]}},
        {"source": "f#4", "doc": {"type": "gateway-load-balancing-config", "name": "lb",
            "rules": [{"id": "r", "type": "weight-based-routing",
                "when": {"models": ["virtual"], "metadata": {"env": "prod"}},
                "load_balance_targets": [
                    {"target": "a/m1", "weight": 70,
                     "retry_config": {"attempts": 2, "delay": 10, "on_status_codes": ["429"]}},
                    {"target": "a/m2", "weight": 30, "override_params": {"temperature": 0}}]}]}},
        {"source": "f#5", "doc": {"type": "gateway-rate-limiting-config", "name": "rl",
            "rules": [{"id": "per-user", "when": {"subjects": ["user:alice"]}, "limit_to": 10,
                       "unit": "requests_per_minute", "rate_limit_applies_per": ["user"]}]}},
        {"source": "f#6", "doc": {"type": "gateway-budget-config", "name": "b",
            "rules": [{"id": "daily", "when": {}, "limit_to": 5.0, "unit": "cost_per_day",
                       "budget_applies_per": ["metadata.team"]}]}},
        {"source": "f#7", "doc": {"type": "gateway-guardrails-config", "name": "g",
            "guardrails": [
                {"name": "tickets", "kind": "regex", "operation": "mutate",
                 "patterns": [{"name": "T", "pattern": "TCK-[0-9]{6}"}]},
                {"name": "meta", "kind": "metadata-validation", "required": ["team"]},
                {"name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/x",
                 "timeout_ms": 100}],
            "rules": [{"id": "g1", "when": {}, "llm_input_guardrails": ["tickets"],
                       "llm_output_guardrails": ["tickets"]}]}},
    ])
}

fn base_engine() -> &'static Engine {
    static ENGINE: LazyLock<Engine> = LazyLock::new(|| Engine::compile(&base_docs()).unwrap());
    &ENGINE
}

fn check_metadata(raw: &[u8]) {
    if let Ok(m) = metadata::parse(raw) {
        assert!(m.len() <= MAX_KEYS);
        for (k, v) in &m {
            assert!(!k.is_empty());
            assert!(v.chars().count() <= METADATA_VALUE_MAX_CHARS);
        }
    }
    // The same header through the whole admission path.
    let _ = base_engine().admit(Some(KEY), "virtual", Some(raw), None);
}

/// `X-TFY-GUARDRAILS` is read by `admit`; whatever it selects exists.
fn check_guardrails_header(raw: &[u8]) {
    let engine = base_engine();
    if let Ok(adm) = engine.admit(Some(KEY), "virtual", Some(br#"{"env":"prod"}"#), Some(raw)) {
        let sel = &adm.guardrails;
        for id in sel
            .input
            .iter()
            .chain(&sel.output)
            .chain(&sel.tool_pre)
            .chain(&sel.tool_post)
        {
            assert!(engine.guardrails.get(*id).is_some());
        }
    }
}

/// Compiles; an engine that compiles also admits without panicking.
fn check_config(docs: &Value) {
    if let Ok(engine) = Engine::compile(docs) {
        let _ = engine.admit(Some(KEY), "virtual", Some(br#"{"env":"prod"}"#), None);
        let _ = engine.admit(
            Some(KEY),
            "a/m1",
            None,
            Some(br#"{"llm_input_guardrails":["x"]}"#),
        );
    }
}

/// Every JSON pointer of `v` (objects and arrays included), in document order.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

#[test]
fn metadata_corpus() {
    for (path, raw) in corpus("metadata") {
        println!("{}", path.display());
        check_metadata(&raw);
    }
}

#[test]
fn guardrails_header_corpus() {
    for (path, raw) in corpus("guardrails_header") {
        println!("{}", path.display());
        check_guardrails_header(&raw);
    }
}

#[test]
fn config_corpus() {
    for (path, raw) in corpus("config") {
        println!("{}", path.display());
        // Not JSON is the YAML loader's business; the engine only ever gets JSON.
        if let Ok(docs) = serde_json::from_slice::<Value>(&raw) {
            check_config(&docs);
        }
    }
}

#[test]
fn base_config_compiles() {
    let e = base_engine();
    let header = br#"{"llm_input_guardrails":["meta"],"llm_output_guardrails":["tickets"]}"#;
    let adm = e.admit(
        Some(KEY),
        "virtual",
        Some(br#"{"env":"prod"}"#),
        Some(header),
    );
    assert_eq!(adm.unwrap().guardrails.input.len(), 2); // the rule's, then the header's
    assert_eq!(e.guardrails.names(), ["tickets", "meta", "hook"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(512)))]

    #[test]
    fn metadata_bytes(raw in prop::collection::vec(any::<u8>(), 0..256)) {
        check_metadata(&raw);
    }

    #[test]
    fn metadata_json(v in arb_json()) {
        check_metadata(v.to_string().as_bytes());
    }

    #[test]
    fn guardrails_header_bytes(raw in prop::collection::vec(any::<u8>(), 0..256)) {
        check_guardrails_header(&raw);
    }

    #[test]
    fn guardrails_header_json(v in arb_json()) {
        check_guardrails_header(v.to_string().as_bytes());
    }

    #[test]
    fn guardrails_header_names(
        input in prop::collection::vec(prop_oneof!["tickets|meta|hook", ".{0,8}"], 0..4),
        output in prop::collection::vec(prop_oneof!["tickets|meta|hook", ".{0,8}"], 0..4),
    ) {
        let raw = json!({"llm_input_guardrails": input, "llm_output_guardrails": output});
        check_guardrails_header(raw.to_string().as_bytes());
    }
}

proptest! {
    // Each case compiles a whole config (the price table included): a quarter as many.
    #![proptest_config(ProptestConfig::with_cases(cases(384) / 4))]

    #[test]
    fn config_arbitrary_json(v in arb_json()) {
        check_config(&v);
        check_config(&json!([{"source": "x", "doc": v}]));
    }

    /// The base config with one value anywhere replaced by any JSON value, or removed.
    #[test]
    fn config_one_value_changed(at in any::<Index>(), value in arb_json(), remove in any::<bool>()) {
        let mut docs = base_docs();
        let mut all = Vec::new();
        pointers(&docs, String::new(), &mut all);
        let pointer = at.get(&all).clone();
        let (parent, last) = pointer.rsplit_once('/').unwrap();
        match docs.pointer_mut(parent).unwrap() {
            Value::Object(m) if remove => { m.remove(&last.replace("~1", "/").replace("~0", "~")); }
            Value::Array(a) if remove => { a.remove(last.parse::<usize>().unwrap()); }
            _ => { *docs.pointer_mut(&pointer).unwrap() = value; }
        }
        check_config(&docs);
    }
}
