//! Routing through the public engine API, with the manual clock: no sleeps.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tollway_core::clock::Clock;
use tollway_core::engine::{AttemptOutcome, Engine};
use tollway_core::routing::{OUTCOME_CONNECT_ERROR, OUTCOME_TIMEOUT};

const KEY: &str = "Bearer test-key-123";

fn docs(rules: Value) -> Value {
    json!([
        {"source": "t#1", "doc": {"type": "provider-account", "name": "a", "provider": "openai-compatible",
            "base_url": "http://127.0.0.1:1/v1", "models": ["m1", "m2", "m3", "m4"]}},
        {"source": "t#2", "doc": {"type": "gateway-keys", "keys": [
            {"name": "k", "key": "test-key-123", "subject": "user:alice"},
            {"name": "t", "key": "team-key-123", "subject": "team:ml"}]}},
        {"source": "t#3", "doc": {"type": "gateway-load-balancing-config", "name": "lb", "rules": rules}},
    ])
}

fn engine(rules: Value) -> Engine {
    Engine::compile_with_clock(&docs(rules), Arc::new(Clock::manual())).unwrap()
}

/// Target names in the order `admit` returns them.
fn order(e: &Engine, auth: &str, model: &str, meta: Option<&[u8]>) -> Vec<String> {
    let a = e.admit(Some(auth), model, meta, None).unwrap();
    a.plans
        .iter()
        .map(|&p| e.targets[e.plans[p as usize].target as usize].name.clone())
        .collect()
}

fn weighted(targets: &[(&str, u32)]) -> Value {
    let t: Vec<Value> = targets
        .iter()
        .map(|(n, w)| json!({"target": n, "weight": w}))
        .collect();
    json!([{"id": "w", "type": "weight-based-routing", "when": {"models": ["v"]}, "load_balance_targets": t}])
}

#[test]
fn weighted_shares_follow_the_weights_in_any_list_order() {
    let lists = [
        vec![("a/m1", 70), ("a/m2", 20), ("a/m3", 10)],
        vec![("a/m3", 10), ("a/m1", 70), ("a/m2", 20)],
        vec![("a/m2", 20), ("a/m3", 10), ("a/m1", 70)],
    ];
    for list in lists {
        let e = engine(weighted(&list));
        let mut counts: HashMap<String, u32> = HashMap::new();
        let draws = 100_000;
        for _ in 0..draws {
            *counts
                .entry(order(&e, KEY, "v", None).remove(0))
                .or_default() += 1;
        }
        for (name, w) in &list {
            let share = f64::from(counts[*name]) / f64::from(draws) * 100.0;
            assert!(
                (share - f64::from(*w)).abs() <= 3.0,
                "{name}: {share:.1}% for weight {w} in {list:?}"
            );
        }
    }
}

#[test]
fn a_zero_weight_target_is_never_first_but_is_a_fallback() {
    let e = engine(weighted(&[("a/m1", 100), ("a/m2", 0)]));
    for _ in 0..1000 {
        assert_eq!(order(&e, KEY, "v", None), ["a/m1", "a/m2"]);
    }
}

#[test]
fn priority_order_is_lowest_number_first() {
    let e = engine(
        json!([{"id": "p", "type": "priority-based-routing", "when": {"models": ["v"]},
        "load_balance_targets": [
            {"target": "a/m1", "priority": 2}, {"target": "a/m2", "priority": 0}, {"target": "a/m3", "priority": 1}]}]),
    );
    assert_eq!(order(&e, KEY, "v", None), ["a/m2", "a/m3", "a/m1"]);
}

fn ok(e: &Engine, target: &str, latency_ms: f64, tokens: u32) {
    let t = e.targets.iter().position(|t| t.name == target).unwrap() as u32;
    e.record_outcomes(&[AttemptOutcome {
        target: t,
        status: 200,
        latency_ms,
        output_tokens: tokens,
    }]);
}

fn fail(e: &Engine, target: &str, status: u16) {
    let t = e.targets.iter().position(|t| t.name == target).unwrap() as u32;
    e.record_outcomes(&[AttemptOutcome {
        target: t,
        status,
        latency_ms: 5.0,
        output_tokens: 0,
    }]);
}

fn latency_rule() -> Value {
    json!([{"id": "l", "type": "latency-based-routing", "when": {"models": ["v"]},
        "load_balance_targets": [{"target": "a/m1"}, {"target": "a/m2"}, {"target": "a/m3"}]}])
}

fn firsts(e: &Engine, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts
            .entry(order(e, KEY, "v", None).remove(0))
            .or_default() += 1;
    }
    counts
}

#[test]
fn latency_spreads_over_the_band_and_tries_unscored_targets() {
    let e = engine(latency_rule());
    // m1: 10 ms/token, m2: 11 ms/token (within 1.2x), m3: 30 ms/token (outside).
    for _ in 0..3 {
        ok(&e, "a/m1", 1000.0, 100);
        ok(&e, "a/m2", 1100.0, 100);
        ok(&e, "a/m3", 3000.0, 100);
    }
    let counts = firsts(&e, 3000);
    assert!(!counts.contains_key("a/m3"), "{counts:?}");
    assert!(counts["a/m1"] > 1200 && counts["a/m2"] > 1200, "{counts:?}");
    assert_eq!(
        order(&e, KEY, "v", None).last().unwrap(),
        "a/m3",
        "slowest is the last fallback"
    );

    // Fewer than 3 samples: m4-like behaviour with a fresh rule: m3 with 2 samples is tried.
    let e = engine(latency_rule());
    for _ in 0..3 {
        ok(&e, "a/m1", 100.0, 100);
        ok(&e, "a/m2", 1000.0, 100);
    }
    ok(&e, "a/m3", 9000.0, 100);
    ok(&e, "a/m3", 9000.0, 100);
    let counts = firsts(&e, 3000);
    assert!(
        counts["a/m3"] > 1200,
        "unscored (2 samples) is still tried: {counts:?}"
    );
    assert!(!counts.contains_key("a/m2"), "{counts:?}");
    ok(&e, "a/m3", 9000.0, 100);
    assert!(
        !firsts(&e, 1000).contains_key("a/m3"),
        "scored now, and slow"
    );
}

#[test]
fn latency_window_forgets_samples_older_than_20_minutes() {
    let e = engine(latency_rule());
    for _ in 0..3 {
        ok(&e, "a/m1", 100.0, 100);
        ok(&e, "a/m2", 5000.0, 100);
        ok(&e, "a/m3", 5000.0, 100);
    }
    assert_eq!(firsts(&e, 500).len(), 1);
    e.clock.advance(20 * 60 * 1000 + 1);
    // All three are unscored again, so all are tried.
    assert_eq!(firsts(&e, 1000).len(), 3);
}

#[test]
fn latency_without_tokens_uses_total_latency() {
    let e = engine(latency_rule());
    for _ in 0..3 {
        ok(&e, "a/m1", 50.0, 0);
        ok(&e, "a/m2", 500.0, 0);
        ok(&e, "a/m3", 500.0, 0);
    }
    assert_eq!(firsts(&e, 500).into_keys().collect::<Vec<_>>(), ["a/m1"]);
}

#[test]
fn two_failures_in_two_minutes_move_a_target_last_until_the_window_passes() {
    let e = engine(
        json!([{"id": "p", "type": "priority-based-routing", "when": {"models": ["v"]},
        "load_balance_targets": [{"target": "a/m1", "priority": 0}, {"target": "a/m2", "priority": 1}]}]),
    );
    fail(&e, "a/m1", 503);
    assert_eq!(
        order(&e, KEY, "v", None),
        ["a/m1", "a/m2"],
        "one failure is not enough"
    );
    e.clock.advance(60_000);
    fail(&e, "a/m1", OUTCOME_TIMEOUT);
    assert_eq!(order(&e, KEY, "v", None), ["a/m2", "a/m1"]);
    e.clock.advance(119_000);
    assert_eq!(
        order(&e, KEY, "v", None),
        ["a/m2", "a/m1"],
        "still within 2 min of the last"
    );
    e.clock.advance(1_001);
    assert_eq!(
        order(&e, KEY, "v", None),
        ["a/m1", "a/m2"],
        "recovered by itself"
    );
    // 400 and 404 are the client's fault, not the target's.
    fail(&e, "a/m1", 400);
    fail(&e, "a/m1", 404);
    assert_eq!(order(&e, KEY, "v", None), ["a/m1", "a/m2"]);
    for status in [429, 401, 403, OUTCOME_CONNECT_ERROR] {
        let e2 = engine(
            json!([{"id": "p", "type": "priority-based-routing", "when": {"models": ["v"]},
            "load_balance_targets": [{"target": "a/m1"}, {"target": "a/m2"}]}]),
        );
        fail(&e2, "a/m1", status);
        fail(&e2, "a/m1", status);
        assert_eq!(
            order(&e2, KEY, "v", None),
            ["a/m2", "a/m1"],
            "status {status}"
        );
    }
}

#[test]
fn unhealthy_weighted_target_is_not_drawn_first() {
    let e = engine(weighted(&[("a/m1", 50), ("a/m2", 50)]));
    fail(&e, "a/m1", 500);
    fail(&e, "a/m1", 502);
    for _ in 0..500 {
        assert_eq!(order(&e, KEY, "v", None), ["a/m2", "a/m1"]);
    }
}

#[test]
fn first_matching_rule_wins_by_subject_metadata_and_model() {
    let e = engine(json!([
        {"id": "team", "type": "priority-based-routing", "when": {"subjects": ["team:ml"], "models": ["v"]},
         "load_balance_targets": [{"target": "a/m1"}]},
        {"id": "prod", "type": "priority-based-routing", "when": {"models": ["v", "a/m4"], "metadata": {"env": "prod"}},
         "load_balance_targets": [{"target": "a/m2"}]},
        {"id": "rest", "type": "priority-based-routing", "when": {"models": ["v"]},
         "load_balance_targets": [{"target": "a/m3"}]},
    ]));
    assert_eq!(
        order(&e, "Bearer team-key-123", "v", Some(br#"{"env":"prod"}"#)),
        ["a/m1"]
    );
    assert_eq!(order(&e, KEY, "v", Some(br#"{"env":"prod"}"#)), ["a/m2"]);
    assert_eq!(order(&e, KEY, "v", Some(br#"{"env":"dev"}"#)), ["a/m3"]);
    assert_eq!(order(&e, KEY, "v", None), ["a/m3"]);
    // A real target named in when.models is routed by the rule, or directly when none matches.
    assert_eq!(order(&e, KEY, "a/m4", Some(br#"{"env":"prod"}"#)), ["a/m2"]);
    assert_eq!(order(&e, KEY, "a/m4", None), ["a/m4"]);
    let a = e.admit(Some(KEY), "v", None, None).unwrap();
    assert_eq!(e.rules[a.rule.unwrap() as usize].id, "rest");
}

#[test]
fn a_virtual_model_without_a_matching_rule_is_404() {
    let e = engine(json!([{"id": "only-ml", "type": "priority-based-routing",
        "when": {"subjects": ["team:ml"], "models": ["v"]}, "load_balance_targets": [{"target": "a/m1"}]}]));
    let d = e.admit(Some(KEY), "v", None, None).unwrap_err();
    assert_eq!(d.status, 404);
    assert!(e
        .admit(Some("Bearer team-key-123"), "v", None, None)
        .is_ok());
}

#[test]
fn config_errors_name_their_paths() {
    let bad = json!([
        {"id": "r", "type": "weight-based-routing", "when": {"models": ["v"]},
         "load_balance_targets": [{"target": "a/m1", "weight": 60}, {"target": "nope/x", "weight": 30}]},
        {"id": "r", "type": "priority-based-routing", "when": {"models": ["w"]},
         "load_balance_targets": [{"target": "v", "retry_config": {"on_status_codes": [429]}}]},
        {"id": "s", "type": "round-robin", "when": {"models": []}, "load_balance_targets": []},
    ]);
    let errs = Engine::compile(&docs(bad)).unwrap_err();
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    for want in [
        "t#3: rules[0].load_balance_targets: weights must add up to 100 (they add up to 90)",
        "t#3: rules[1].load_balance_targets[0].retry_config.on_status_codes[0]: expected an HTTP status code as a string",
        "t#3: rules[2].type: 'round-robin' is not one of",
        "t#3: rules[2].when.models: an empty list matches no model",
        "t#3: rules[0].load_balance_targets[1].target: unknown target 'nope/x'",
        "t#3: rules[1].id: duplicate rule id 'r'",
        "t#3: rules[1].load_balance_targets[0].target: 'v' is a virtual model",
    ] {
        assert!(shown.iter().any(|s| s.starts_with(want)), "missing {want:?} in {shown:#?}");
    }
}

#[test]
fn a_truefoundry_file_loads_unchanged() {
    let tf = json!([{
        "id": "gpt4-dev-load", "type": "weight-based-routing",
        "when": {"subjects": ["user:bob@example.com", "virtual-account:acct_1"], "models": ["gpt-4"],
                 "metadata": {"environment": "production"}},
        "load_balance_targets": [
            {"target": "a/m1", "weight": 80,
             "retry_config": {"attempts": 2, "delay": 100, "on_status_codes": ["429", "500"]},
             "fallback_status_codes": ["401", "403", "404", "429", "500", "502", "503"],
             "fallback_candidate": true, "override_params": {"temperature": 0.5, "max_tokens": 800}},
            {"target": "a/m2", "weight": 20}]}]);
    let mut d = docs(tf);
    d[2]["doc"]["model_configs"] = json!([{"model": "a/m1",
        "usage_limits": {"tokens_per_minute": 50000, "requests_per_minute": 100},
        "failure_tolerance": {"allowed_failures_per_minute": 3, "cooldown_period_minutes": 5,
                              "failure_status_codes": ["429", "500"]}}]);
    let e = Engine::compile(&d).unwrap();
    let plan = &e.plans[e.rules[0].plans[0] as usize];
    assert_eq!(
        plan.override_params.as_deref(),
        Some(r#"{"temperature":0.5,"max_tokens":800}"#)
    );
    assert_eq!(plan.retry.on_status_codes, [429, 500]);
    assert_eq!(
        e.rules[0].when.subjects.as_ref().unwrap()[1],
        "virtualaccount:acct_1"
    );
}

proptest! {
    #[test]
    fn admit_never_panics_on_arbitrary_metadata_and_model(
        meta in proptest::collection::vec(any::<u8>(), 0..200),
        model in "\\PC{0,30}",
        auth in "\\PC{0,30}",
    ) {
        let e = engine(weighted(&[("a/m1", 50), ("a/m2", 50)]));
        let _ = e.admit(Some(&auth), &model, Some(&meta), None);
        let _ = e.admit(Some(KEY), &model, Some(&meta), None);
        let _ = e.admit(Some(KEY), "v", Some(&meta), None);
    }

    #[test]
    fn compile_never_panics_on_arbitrary_rules(rules in arb_json()) {
        let _ = Engine::compile(&docs(json!([rules])));
        let _ = Engine::compile(&docs(rules));
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0u32..200).prop_map(|n| json!(n)),
        prop_oneof![
            Just("a/m1"),
            Just("v"),
            Just("429"),
            Just("weight-based-routing"),
            Just("x")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        let keys = prop_oneof![
            Just("id"),
            Just("type"),
            Just("when"),
            Just("models"),
            Just("load_balance_targets"),
            Just("target"),
            Just("weight"),
            Just("priority"),
            Just("retry_config"),
            Just("attempts"),
            Just("on_status_codes"),
            Just("override_params"),
            Just("metadata"),
            Just("subjects"),
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(keys.prop_map(str::to_owned), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The issue's document: a rule that names a virtual model and metadata, then one matched by
/// metadata alone, which applies to whatever model the request names.
fn metadata_routed() -> Engine {
    let e = json!([
        {"source": "t#1", "doc": {"type": "provider-account", "name": "openai-main", "provider": "openai-compatible",
            "base_url": "http://127.0.0.1:1/v1", "models": ["gpt-4o-mini", "gpt-4.1"]}},
        {"source": "t#2", "doc": {"type": "provider-account", "name": "anthropic-main", "provider": "anthropic",
            "api_key": "sk-ant", "models": ["claude-sonnet", "claude-opus"]}},
        {"source": "t#3", "doc": {"type": "gateway-keys", "keys": [
            {"name": "k", "key": "test-key-123", "subject": "user:alice"},
            {"name": "o", "key": "openai-only-1", "subject": "user:bob", "allowed_models": ["openai-main/*"]}]}},
        {"source": "t#4", "doc": {"name": "engineering-agent-routing", "type": "gateway-load-balancing-config", "rules": [
            {"id": "simple-repo-questions", "type": "priority-based-routing",
             "when": {"models": ["prod/engineering-assistant"], "metadata": {"workflow": "repo-understanding"}},
             "load_balance_targets": [
                {"target": "openai-main/gpt-4o-mini", "priority": 0,
                 "retry_config": {"attempts": 2, "delay": 100, "on_status_codes": ["429", "500"]},
                 "fallback_status_codes": ["429", "500", "502", "503"]},
                {"target": "anthropic-main/claude-sonnet", "priority": 1}]},
            {"id": "security-critical-review", "type": "priority-based-routing",
             "when": {"metadata": {"workflow": "security-review"}},
             "load_balance_targets": [
                {"target": "anthropic-main/claude-opus", "priority": 0},
                {"target": "openai-main/gpt-4.1", "priority": 1}]}]}},
    ]);
    Engine::compile_with_clock(&e, Arc::new(Clock::manual())).unwrap()
}

#[test]
fn a_rule_matched_by_metadata_alone_applies_to_any_model() {
    let e = metadata_routed();
    let repo = Some(&br#"{"workflow":"repo-understanding"}"#[..]);
    let review = Some(&br#"{"workflow":"security-review"}"#[..]);
    let va = "prod/engineering-assistant";
    let opus_first = ["anthropic-main/claude-opus", "openai-main/gpt-4.1"];
    assert_eq!(
        order(&e, KEY, va, repo),
        ["openai-main/gpt-4o-mini", "anthropic-main/claude-sonnet"]
    );
    // First match wins: the virtual model's own rule does not match, the metadata rule does.
    assert_eq!(order(&e, KEY, va, review), opus_first);
    // A real target and a name nothing defines are routed by the metadata rule too.
    assert_eq!(
        order(&e, KEY, "openai-main/gpt-4o-mini", review),
        opus_first
    );
    assert_eq!(order(&e, KEY, "anything-at-all", review), opus_first);
    let a = e.admit(Some(KEY), "anything-at-all", review, None).unwrap();
    assert_eq!(
        a.applied,
        r#"{"load_balancing":"security-critical-review"}"#
    );
    // No rule matches: a target is called directly, anything else is 404.
    assert_eq!(
        order(&e, KEY, "openai-main/gpt-4o-mini", repo),
        ["openai-main/gpt-4o-mini"]
    );
    for (model, meta) in [
        ("anything-at-all", repo),
        (va, None),
        ("anything-at-all", None),
    ] {
        let d = e.admit(Some(KEY), model, meta, None).unwrap_err();
        assert_eq!((d.status, d.code), (404, "model_not_found"), "{model}");
    }
    // allowed_models still decides which names a key may ask for.
    let d = e
        .admit(
            Some("Bearer openai-only-1"),
            "anything-at-all",
            review,
            None,
        )
        .unwrap_err();
    assert_eq!(d.status, 403);
    assert!(e
        .admit(
            Some("Bearer openai-only-1"),
            "openai-main/gpt-4.1",
            review,
            None
        )
        .is_ok());
}

#[test]
fn a_rule_matched_by_subject_alone_applies_to_any_model() {
    let e = engine(json!([
        {"id": "ml", "type": "priority-based-routing", "when": {"subjects": ["team:ml"]},
         "load_balance_targets": [{"target": "a/m3"}, {"target": "a/m4"}]},
        {"id": "v", "type": "priority-based-routing", "when": {"models": ["v"]},
         "load_balance_targets": [{"target": "a/m1"}]},
    ]));
    let team = "Bearer team-key-123";
    assert_eq!(order(&e, team, "v", None), ["a/m3", "a/m4"]);
    assert_eq!(order(&e, team, "a/m1", None), ["a/m3", "a/m4"]);
    assert_eq!(order(&e, KEY, "v", None), ["a/m1"]);
    assert_eq!(order(&e, KEY, "a/m2", None), ["a/m2"]);
    assert_eq!(
        e.admit(Some(KEY), "other", None, None).unwrap_err().status,
        404
    );
}
