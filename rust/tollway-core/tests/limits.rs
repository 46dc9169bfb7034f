//! Rate limits through their public API, with explicit times (no clock, no sleeps).

use serde_json::{json, Value};
use tollway_core::limits::{
    parse_rate_limits, Decision, LimitKind, RateLimitRule, RateLimiter, RequestFacts,
};
use tollway_core::schema::Errors;

const T0: u64 = 1_000_000_000;
const MIN: u64 = 60_000;

fn rules(rules: Value) -> Vec<RateLimitRule> {
    let doc = json!({"type": "gateway-rate-limiting-config", "rules": rules});
    let mut errs = Errors::new("t.yaml");
    let mut out = Vec::new();
    parse_rate_limits(&doc, &mut out, &mut errs);
    assert!(errs.is_empty(), "{:?}", errs.list);
    out
}

fn limiter(r: Value) -> RateLimiter {
    RateLimiter::new(rules(r), 100_000)
}

fn meta(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn facts<'a>(
    subject: &'a str,
    model: &'a str,
    metadata: &'a [(String, String)],
) -> RequestFacts<'a> {
    RequestFacts {
        subject,
        model,
        metadata,
        tool: None,
    }
}

/// How many of `n` requests at `now` pass.
fn passes(l: &RateLimiter, now: u64, f: &RequestFacts<'_>, n: usize) -> usize {
    (0..n).filter(|_| l.check(now, f).allowed).count()
}

#[test]
fn a_request_bucket_empties_then_refills_continuously() {
    let l =
        limiter(json!([{"id": "rpm", "when": {}, "limit_to": 60, "unit": "requests_per_minute"}]));
    let f = facts("user:a", "m", &[]);
    let first = l.check(T0, &f);
    assert_eq!(
        (first.allowed, first.limit, first.remaining, first.reset_ms),
        (true, 60, 59, 1000)
    );
    assert_eq!(passes(&l, T0, &f, 100), 59);
    let denied = l.check(T0, &f);
    assert!(!denied.allowed);
    assert_eq!(
        (denied.rule, denied.remaining, denied.retry_after_s),
        (Some(0), 0, 1)
    );
    assert_eq!(l.rule_id(0), "rpm");
    // One request per second comes back; half a second later nothing has.
    assert_eq!(passes(&l, T0 + 500, &f, 5), 0);
    assert_eq!(passes(&l, T0 + 1000, &f, 5), 1);
    assert_eq!(passes(&l, T0 + 11_000, &f, 20), 10);
    // A quiet minute fills the bucket, never beyond its capacity.
    assert_eq!(passes(&l, T0 + 10 * MIN, &f, 100), 60);
}

#[test]
fn a_denial_carries_the_headers_and_message_of_a_429() {
    let l = limiter(
        json!([{"id": "five-per-hour", "when": {}, "limit_to": 5, "unit": "requests_per_hour"}]),
    );
    let f = facts("user:a", "m", &[]);
    assert_eq!(passes(&l, T0, &f, 5), 5);
    let d = l.check(T0, &f);
    assert_eq!(d.retry_after_s, 720, "one request per 12 minutes");
    assert_eq!(
        d.headers(),
        vec![
            ("x-ratelimit-limit-requests", "5".to_owned()),
            ("x-ratelimit-remaining-requests", "0".to_owned()),
            ("x-ratelimit-reset-requests", "1h0m0s".to_owned()),
            ("retry-after", "720".to_owned()),
        ]
    );
    assert_eq!(
        l.message(&d),
        "Rate limit exceeded: rule 'five-per-hour' allows 5 requests per hour. Retry after 720 s."
    );
    let nobody = limiter(
        json!([{"id": "x", "when": {"subjects": ["user:b"]}, "limit_to": 1, "unit": "requests_per_day"}]),
    );
    assert_eq!(nobody.check(T0, &f), Decision::UNLIMITED);
    assert!(Decision::UNLIMITED.headers().is_empty());
}

#[test]
fn tokens_are_debited_at_settle_and_a_negative_balance_delays_requests() {
    let l =
        limiter(json!([{"id": "tpm", "when": {}, "limit_to": 1000, "unit": "tokens_per_minute"}]));
    let f = facts("user:a", "m", &[]);
    let d = l.check(T0, &f);
    assert!(d.allowed && d.kind == LimitKind::Tokens);
    assert_eq!(d.remaining, 1000, "admission reserves nothing");
    let ticket = d.ticket.expect("token rules hand out a ticket");
    l.debit(T0 + 100, ticket, 1600);
    // The bucket was full (1000): now -600, refilling 1000 per minute, above zero after 36 s.
    let d = l.check(T0 + 100, &f);
    assert!(!d.allowed);
    assert_eq!((d.remaining, d.retry_after_s, d.ticket), (0, 37, None));
    assert_eq!(
        d.headers()[0],
        ("x-ratelimit-limit-tokens", "1000".to_owned())
    );
    assert!(
        !l.check(T0 + 36_100, &f).allowed,
        "exactly zero is not above zero"
    );
    let d = l.check(T0 + 36_101, &f);
    assert!(d.allowed && d.ticket.is_some());
    assert_eq!(d.reset_ms, 59_999, "time to refill from 1/60 to full");
}

#[test]
fn applies_per_keys_give_each_entity_its_own_bucket() {
    let l = limiter(json!([
        {"id": "per-project", "when": {"models": ["a"]}, "limit_to": 5, "unit": "requests_per_minute",
         "rate_limit_applies_per": ["metadata.project_id"]},
        {"id": "per-user-model", "when": {"models": ["b", "c"]}, "limit_to": 2, "unit": "requests_per_minute",
         "rate_limit_applies_per": ["user", "model"]},
        {"id": "per-va", "when": {"models": ["d"]}, "limit_to": 1, "unit": "requests_per_minute",
         "rate_limit_applies_per": ["virtualaccount"]},
        {"id": "shared", "when": {"models": ["e"]}, "limit_to": 3, "unit": "requests_per_minute"}]));
    let (p1, p2, none) = (
        meta(&[("project_id", "p1")]),
        meta(&[("project_id", "p2")]),
        meta(&[]),
    );
    assert_eq!(passes(&l, T0, &facts("user:a", "a", &p1), 10), 5);
    assert_eq!(
        passes(&l, T0, &facts("user:b", "a", &p1), 10),
        0,
        "the project is the entity, not the user"
    );
    assert_eq!(passes(&l, T0, &facts("user:a", "a", &p2), 10), 5);
    assert_eq!(
        passes(&l, T0, &facts("user:a", "a", &none), 10),
        5,
        "no project: its own 'missing' bucket"
    );

    assert_eq!(passes(&l, T0, &facts("user:a", "b", &none), 10), 2);
    assert_eq!(
        passes(&l, T0, &facts("user:a", "c", &none), 10),
        2,
        "two keys: user and model"
    );
    assert_eq!(passes(&l, T0, &facts("user:b", "b", &none), 10), 2);

    assert_eq!(
        passes(&l, T0, &facts("virtualaccount:x", "d", &none), 10),
        1
    );
    assert_eq!(
        passes(&l, T0, &facts("virtualaccount:y", "d", &none), 10),
        1
    );

    assert_eq!(passes(&l, T0, &facts("user:a", "e", &none), 2), 2);
    assert_eq!(
        passes(&l, T0, &facts("team:t", "e", &p1), 5),
        1,
        "without applies_per one bucket is shared"
    );
}

#[test]
fn only_the_first_matching_rule_applies() {
    let l = limiter(json!([
        {"id": "vip", "when": {"subjects": ["user:vip"]}, "limit_to": 10, "unit": "requests_per_minute"},
        {"id": "everyone", "when": {}, "limit_to": 1, "unit": "requests_per_minute"}]));
    let vip = l.check(T0, &facts("user:vip", "m", &[]));
    assert_eq!((vip.rule, vip.limit), (Some(0), 10));
    assert_eq!(
        passes(&l, T0, &facts("user:vip", "m", &[]), 20),
        9,
        "the catch-all rule never sees vip"
    );
    assert_eq!(passes(&l, T0, &facts("user:x", "m", &[]), 3), 1);
    let metadata_rule = limiter(json!([
        {"id": "prod", "when": {"metadata": {"env": "prod"}}, "limit_to": 1, "unit": "requests_per_day"}]));
    assert!(metadata_rule
        .check(T0, &facts("user:x", "m", &meta(&[("env", "dev")])))
        .rule
        .is_none());
    assert_eq!(
        metadata_rule
            .check(T0, &facts("user:x", "m", &meta(&[("env", "prod")])))
            .rule,
        Some(0)
    );
}

#[test]
fn a_million_distinct_keys_stay_within_the_cap_and_an_active_bucket_survives() {
    let rule = rules(
        json!([{"id": "per-project", "when": {}, "limit_to": 100, "unit": "requests_per_hour",
                             "rate_limit_applies_per": ["metadata.project_id"]}]),
    );
    let cap = 10_000;
    let l = RateLimiter::new(rule, cap);
    let active = meta(&[("project_id", "the-real-one")]);
    let active = facts("user:a", "m", &active);
    assert_eq!(passes(&l, T0, &active, 10), 10);
    let mut fresh = meta(&[("project_id", "")]);
    let mut max_seen = 0;
    let mut now = T0;
    for i in 0..1_000_000u64 {
        // First half: 5 ms apart, so a one-request bucket is full again after 7200 keys and
        // idle buckets make room. Second half: time stands still, nothing refills, and the
        // least recently used buckets make room.
        if i < 500_000 {
            now += 5;
        }
        fresh[0].1.clear();
        fresh[0].1.push_str(&i.to_string());
        l.check(now, &facts("user:a", "m", &fresh));
        if i % 1000 == 0 {
            // The real project keeps its bucket near empty.
            l.check(now, &active);
        }
        if i % 4096 == 0 {
            max_seen = max_seen.max(l.stats()[0].entities);
        }
        if i == 499_999 {
            assert_eq!(
                l.stats()[0].evicted_live,
                0,
                "only full buckets were dropped"
            );
        }
    }
    let stats = &l.stats()[0];
    assert!(
        max_seen <= cap && stats.entities <= cap,
        "{max_seen} {}",
        stats.entities
    );
    assert!(stats.evicted_live > 400_000, "{stats:?}");
    // The active bucket kept its level: a fresh one would show 99 remaining.
    let d = l.check(now, &active);
    assert!(d.remaining < 10, "{d:?}");
}

#[test]
fn a_reload_adopts_the_buckets_of_unchanged_rules() {
    let old = limiter(json!([
        {"id": "kept", "when": {}, "limit_to": 3, "unit": "requests_per_minute"},
        {"id": "reshaped", "when": {"models": ["x"]}, "limit_to": 3, "unit": "requests_per_minute"}]));
    let f = facts("user:a", "m", &[]);
    let x = facts("user:a", "x", &[]);
    assert_eq!(passes(&old, T0, &f, 3), 3);
    let mut new = limiter(json!([
        {"id": "reshaped", "when": {"models": ["x"]}, "limit_to": 3, "unit": "requests_per_hour"},
        {"id": "kept", "when": {}, "limit_to": 2, "unit": "requests_per_minute"}]));
    assert_eq!(new.adopt(&old), 1);
    assert_eq!(passes(&new, T0, &f, 3), 0, "the emptied bucket came along");
    assert_eq!(passes(&new, T0, &x, 5), 3, "a changed unit starts fresh");
    // The new limit applies to the adopted bucket: capacity 2.
    assert_eq!(passes(&new, T0 + 10 * MIN, &f, 5), 2);
    // Both share state: the old engine settling in-flight requests hits the same buckets.
    assert_eq!(passes(&old, T0 + 10 * MIN, &f, 5), 0);
}

#[test]
fn deltas_are_drained_for_sync_and_remote_totals_lower_the_bucket() {
    let l = limiter(
        json!([{"id": "rpm", "when": {}, "limit_to": 10, "unit": "requests_per_minute",
                            "rate_limit_applies_per": ["user"]}]),
    );
    let (a, b) = (facts("user:a", "m", &[]), facts("user:b", "m", &[]));
    let wall = 1_700_000_000_000;
    assert!(
        l.drain_deltas(wall).is_empty(),
        "the first drain switches tracking on"
    );
    assert_eq!(passes(&l, T0, &a, 3), 3);
    assert_eq!(passes(&l, T0, &b, 1), 1);
    let mut deltas = l.drain_deltas(wall);
    deltas.sort_by(|x, y| x.amount.total_cmp(&y.amount));
    assert_eq!(deltas.len(), 2);
    assert_eq!(
        (&*deltas[1].rule_id, deltas[1].window, deltas[1].amount),
        ("rpm", wall / MIN, 3.0)
    );
    assert!(
        l.drain_deltas(wall).is_empty(),
        "each unit is handed over once"
    );
    assert_eq!(l.window_ms("rpm"), Some(MIN));
    // Redis says 9 were used by user a across replicas: 3 here, so 6 elsewhere.
    let ea = deltas[1].entity;
    assert!(l.apply_remote(T0, "rpm", ea, wall / MIN, 9.0));
    assert_eq!(passes(&l, T0, &a, 5), 1);
    // The same total again changes nothing; a stale window is ignored.
    assert!(l.apply_remote(T0, "rpm", ea, wall / MIN, 9.0));
    assert!(l.apply_remote(T0, "rpm", ea, wall / MIN - 1, 100.0));
    assert_eq!(passes(&l, T0 + 100, &a, 5), 0);
    assert!(!l.apply_remote(T0, "nope", ea, 0, 1.0));
    assert_eq!(l.drain_deltas(wall)[0].amount, 1.0);
}
