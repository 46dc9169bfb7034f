//! What a background task exchanges with a shared store (Redis) to hold limits and budgets
//! across replicas: named counters of consumption per (rule, unit, window, entity).
//!
//! A counter's name carries the rule's unit as well as its id, so after a reload that changes
//! a rule's unit (or during a rolling deploy where replicas disagree) requests and tokens, or
//! minutes and hours, never add up in one counter. Names are `rl:<unit>:<window>:<entity>:<id>`
//! for rate limits and `bg:<unit>:<period>:<entity>:<id>` for budgets; the entity is 16 hex
//! digits and the rule id comes last, so it may contain `:`.
//!
//! While the store answers, each replica admits only from its lease on a counter (see
//! `lease.rs`): the sync task asks the store for slices with [`LeaseRequest`]s, which a
//! script grants as a part of what is left, and hands back idle leases as negative deltas.

use super::config::BudgetRule;
use super::ratelimit::Limit;
use super::ruleset::{LimitRule, RuleSet};
use super::{Budgets, RateLimiter};
use crate::schema::{Errors, Fields};
use serde_json::Value;

/// Where limit and budget counters are shared (DESIGN.md §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    /// `local` (in process) or `redis` (synced in the background).
    pub backend: String,
    pub redis_url: Option<String>,
    pub sync_interval_ms: u64,
    /// Connect and read timeout of every Redis call: a hung Redis never blocks anything.
    pub redis_timeout_ms: u64,
}

impl Default for StateSettings {
    fn default() -> Self {
        Self {
            backend: "local".to_owned(),
            redis_url: None,
            sync_interval_ms: 100,
            redis_timeout_ms: 250,
        }
    }
}

/// `gateway-settings.state`: where limit and budget counters are shared.
pub fn parse_state(v: &Value, out: &mut StateSettings, errs: &mut Errors) {
    let known = [
        "backend",
        "redis_url",
        "sync_interval_ms",
        "redis_timeout_ms",
    ];
    let Some(f) = Fields::new(v, "state", &known, errs) else {
        return;
    };
    if let Some(b) = f.choice("backend", &["local", "redis"], errs) {
        out.backend = b;
    }
    if let Some(url) = f.string("redis_url", errs) {
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("unix://"))
        {
            errs.push(
                "state.redis_url",
                "must be a redis://, rediss:// or unix:// URL",
            );
        }
        out.redis_url = Some(url);
    }
    if out.backend == "redis" && out.redis_url.is_none() {
        errs.push("state.redis_url", "required when backend is redis");
    }
    if let Some(ms) = f.uint("sync_interval_ms", 10, 60_000, errs) {
        out.sync_interval_ms = ms;
    }
    if let Some(ms) = f.uint("redis_timeout_ms", 10, 60_000, errs) {
        out.redis_timeout_ms = ms;
    }
}

/// Consumption to add to one shared counter.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncDelta {
    pub key: String,
    pub amount: f64,
    /// How long the counter is worth keeping after this write: two windows.
    pub ttl_ms: u64,
}

/// A slice to ask of a shared counter (after this tick's deltas were added to it): the
/// store grants part of `limit - total` (whole multiples of `unit` when it is not 0).
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRequest {
    pub key: String,
    pub limit: f64,
    pub unit: f64,
    pub ttl_ms: u64,
}

/// The name of a rule's shared counter of one (window, entity).
fn key<R: LimitRule>(rule: &R, window: u64, entity: u64) -> String {
    format!(
        "{}:{}:{}:{:016x}:{}",
        R::COUNTER_PREFIX,
        rule.unit_name(),
        window,
        entity,
        rule.id()
    )
}

/// One sync tick: leases to ask for, and (after idle leases were handed back) everything
/// to add to shared counters.
pub fn tick(
    limiter: &RateLimiter,
    budgets: &Budgets,
    wall_ms: u64,
) -> (Vec<SyncDelta>, Vec<LeaseRequest>) {
    let mut leases = Vec::new();
    lease_requests(&limiter.rules, wall_ms, &mut leases);
    lease_requests(&budgets.rules, wall_ms, &mut leases);
    (drain(limiter, budgets, wall_ms), leases)
}

fn lease_requests<R: LimitRule>(rules: &RuleSet<R>, wall_ms: u64, out: &mut Vec<LeaseRequest>) {
    for w in rules.lease_tick(wall_ms) {
        if let Some(c) = rules.find(&w.rule_id) {
            out.push(LeaseRequest {
                key: key(&c.rule, w.window, w.entity),
                limit: w.limit,
                unit: w.unit,
                ttl_ms: c.rule.counter_ttl_ms(),
            });
        }
    }
}

/// Everything consumed since the last call, as increments of shared counters; the first
/// call switches tracking on (and returns nothing).
pub fn drain(limiter: &RateLimiter, budgets: &Budgets, wall_ms: u64) -> Vec<SyncDelta> {
    let mut out = Vec::new();
    deltas(&limiter.rules, wall_ms, &mut out);
    deltas(&budgets.rules, wall_ms, &mut out);
    out
}

fn deltas<R: LimitRule>(rules: &RuleSet<R>, wall_ms: u64, out: &mut Vec<SyncDelta>) {
    for d in rules.drain_deltas(wall_ms) {
        if let Some(c) = rules.find(&d.rule_id) {
            out.push(SyncDelta {
                key: key(&c.rule, d.window, d.entity),
                amount: d.amount,
                ttl_ms: c.rule.counter_ttl_ms(),
            });
        }
    }
}

/// Applies the global value of a shared counter (all replicas, this one included). Returns
/// false when the key names no rule of this config (removed, or its unit changed): stop
/// watching it.
pub fn apply(
    limiter: &RateLimiter,
    budgets: &Budgets,
    now_ms: u64,
    wall_ms: u64,
    key: &str,
    total: f64,
) -> bool {
    apply_grant(limiter, budgets, now_ms, wall_ms, key, None, total)
}

/// Applies a lease the store granted on a counter (`grant`, maybe 0) and the counter's
/// total after it. Returns false when the key names no rule of this config.
pub fn apply_lease(
    limiter: &RateLimiter,
    budgets: &Budgets,
    now_ms: u64,
    wall_ms: u64,
    key: &str,
    grant: f64,
    total: f64,
) -> bool {
    let grant = if grant.is_finite() {
        grant.max(0.0)
    } else {
        0.0
    };
    apply_grant(limiter, budgets, now_ms, wall_ms, key, Some(grant), total)
}

fn apply_grant(
    limiter: &RateLimiter,
    budgets: &Budgets,
    now_ms: u64,
    wall_ms: u64,
    key: &str,
    grant: Option<f64>,
    total: f64,
) -> bool {
    let mut parts = key.splitn(5, ':');
    let (Some(prefix), Some(unit), Some(window), Some(entity), Some(rule_id)) = (
        parts.next(),
        parts.next(),
        parts.next().and_then(|w| w.parse::<u64>().ok()),
        parts.next().and_then(|e| u64::from_str_radix(e, 16).ok()),
        parts.next(),
    ) else {
        return false;
    };
    if !total.is_finite() {
        return true;
    }
    let counter = Counter {
        unit,
        rule_id,
        entity,
        window,
        grant,
        total,
    };
    // Each kind on its own clock: buckets refill on monotonic time, budgets count days.
    match prefix {
        Limit::COUNTER_PREFIX => counter.apply(&limiter.rules, now_ms),
        BudgetRule::COUNTER_PREFIX => counter.apply(&budgets.rules, wall_ms),
        _ => false,
    }
}

/// What the store answered for one counter.
struct Counter<'a> {
    unit: &'a str,
    rule_id: &'a str,
    entity: u64,
    window: u64,
    grant: Option<f64>,
    total: f64,
}

impl Counter<'_> {
    fn apply<R: LimitRule>(&self, rules: &RuleSet<R>, now: u64) -> bool {
        let Some(c) = rules.find(self.rule_id) else {
            return false;
        };
        let (id, entity, window, total) = (self.rule_id, self.entity, self.window, self.total);
        c.rule.unit_name() == self.unit
            && match self.grant {
                Some(g) => rules.apply_lease(now, id, entity, window, g, total),
                None => rules.apply_remote(now, id, entity, window, total),
            }
    }
}

/// While the shared store is unreachable, each replica enforces `1/replicas` of every limit
/// and budget on its own; 1 when synced. A rate limit's buckets then hold and refill
/// `limit / replicas`; a budget may spend `1/replicas` of what was left of it when the outage
/// began (a conservative local reservation). The share lives with a rule's state, so a
/// reload's adopted rules keep it.
pub fn set_share(limiter: &RateLimiter, budgets: &Budgets, replicas: u32) {
    limiter.rules.set_share(replicas);
    budgets.rules.set_share(replicas);
}

/// The store answers and `replicas` replicas share it: admit from leases (0: stop).
pub fn set_replicas(limiter: &RateLimiter, budgets: &Budgets, replicas: u32) {
    limiter.rules.set_replicas(replicas);
    budgets.rules.set_replicas(replicas);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::config::{parse_budgets, parse_rate_limits, BudgetPeriod};
    use crate::limits::RequestFacts;
    use crate::schema::Errors;
    use serde_json::{json, Value};

    /// 2026-03-04T12:00:00Z: mid-day, mid-week, mid-month.
    const WALL: u64 = 1_772_625_600_000;
    const MIN: u64 = 60_000;

    fn limiter(rules: Value) -> RateLimiter {
        let doc = json!({"type": "gateway-rate-limiting-config", "rules": rules});
        let mut errs = Errors::new("r.yaml");
        let mut out = Vec::new();
        parse_rate_limits(&doc, &mut out, &mut errs);
        assert!(errs.is_empty(), "{:?}", errs.list);
        RateLimiter::new(out, 1000)
    }

    fn budgets(rules: Value) -> Budgets {
        let doc = json!({"type": "gateway-budget-config", "rules": rules});
        let mut errs = Errors::new("b.yaml");
        let mut out = Vec::new();
        parse_budgets(&doc, &mut out, &mut errs);
        assert!(errs.is_empty(), "{:?}", errs.list);
        Budgets::new(out, 1000)
    }

    fn rpm(limit: u64) -> RateLimiter {
        limiter(json!([{"id": "team:a", "when": {}, "limit_to": limit,
                        "unit": "requests_per_minute"}]))
    }

    fn daily(limit: f64) -> Budgets {
        budgets(json!([{"id": "spend", "when": {}, "limit_to": limit, "unit": "cost_per_day"}]))
    }

    const FACTS: RequestFacts<'static> = RequestFacts {
        subject: "user:a",
        model: "m",
        metadata: &[],
        tool: None,
    };

    fn passes(l: &RateLimiter, now: u64, n: usize) -> usize {
        (0..n).filter(|_| l.check(now, &FACTS).allowed).count()
    }

    #[test]
    fn deltas_become_named_counters_and_totals_come_back_by_name() {
        let (l, b) = (rpm(10), daily(10.0));
        assert!(
            drain(&l, &b, WALL).is_empty(),
            "the first drain switches tracking on"
        );
        assert_eq!(passes(&l, 0, 3), 3);
        b.charge(WALL, &FACTS, 2.5);
        let d = drain(&l, &b, WALL);
        let window = WALL / MIN;
        let day = BudgetPeriod::Day.index(WALL);
        assert_eq!(
            d,
            vec![
                SyncDelta {
                    key: format!("rl:requests_per_minute:{window}:0000000000000000:team:a"),
                    amount: 3.0,
                    ttl_ms: 2 * MIN,
                },
                SyncDelta {
                    key: format!("bg:cost_per_day:{day}:0000000000000000:spend"),
                    amount: 2.5,
                    ttl_ms: 2 * 86_400_000,
                },
            ]
        );
        // Globally 9 requests this minute (3 here): one left.
        assert!(apply(&l, &b, 0, WALL, &d[0].key, 9.0));
        assert_eq!(passes(&l, 0, 5), 1);
        assert!(apply(&l, &b, 0, WALL, &d[1].key, 10.5));
        assert!(!b.check(WALL, &FACTS).allowed);
        // A counter of another unit, of an unknown rule, or a malformed name is not ours.
        let hourly = d[0].key.replace("per_minute", "per_hour");
        assert!(!apply(&l, &b, 0, WALL, &hourly, 1.0));
        assert!(!apply(
            &l,
            &b,
            0,
            WALL,
            &d[0].key.replace("team:a", "x"),
            1.0
        ));
        assert!(!apply(&l, &b, 0, WALL, "rl:requests_per_minute:zz", 1.0));
    }

    #[test]
    fn during_an_outage_each_replica_enforces_its_share_of_a_limit() {
        let l = rpm(20);
        l.rules.set_share(4);
        assert_eq!(passes(&l, 0, 20), 5, "20 over 4 replicas");
        // The share refills at its own rate: 5 per minute.
        assert_eq!(passes(&l, 12_000, 5), 1);
        l.rules.set_share(1);
        assert_eq!(
            passes(&l, 12_000, 5),
            0,
            "back to the whole limit, from where it was"
        );
        assert_eq!(passes(&l, 12_000 + MIN, 30), 20);
        // A limit smaller than the replica count still lets one through, never none.
        let tiny = rpm(2);
        tiny.rules.set_share(4);
        assert_eq!(passes(&tiny, 0, 3), 1);
        assert_eq!(passes(&tiny, MIN, 3), 0, "and refills at 2/4 per minute");
        assert_eq!(passes(&tiny, 2 * MIN, 3), 1);
    }

    #[test]
    fn the_share_carries_over_a_reload_with_the_rule() {
        let old = rpm(20);
        old.rules.set_share(2);
        let mut new = rpm(20);
        assert_eq!(new.adopt(&old), 1);
        assert_eq!(passes(&new, 0, 20), 10);
    }

    #[test]
    fn during_an_outage_each_replica_spends_its_share_of_what_was_left() {
        let (l, b) = (rpm(1), daily(10.0));
        let _ = drain(&l, &b, WALL);
        b.charge(WALL, &FACTS, 2.0);
        let d = drain(&l, &b, WALL);
        // Other replicas had spent 4: 4 of 10 were left when Redis went away.
        assert!(apply(&l, &b, 0, WALL, &d[0].key, 6.0));
        b.rules.set_share(3);
        // Each of 3 replicas may spend a third of the 4 left: 1 here counts as 3.
        b.charge(WALL, &FACTS, 1.0);
        let c = b.check(WALL, &FACTS);
        assert_eq!((c.allowed, c.spent_usd), (true, 9.0));
        b.charge(WALL, &FACTS, 0.5);
        assert!(!b.check(WALL, &FACTS).allowed, "1.5 is more than our third");
        // Back in sync, the known total decides again.
        b.rules.set_share(1);
        assert_eq!(b.check(WALL, &FACTS).spent_usd, 7.5);
        // A new outage starts from the spend known then: 2.5 left, 1.25 each of 2.
        b.rules.set_share(2);
        b.charge(WALL, &FACTS, 1.0);
        assert!(b.check(WALL, &FACTS).allowed);
        b.charge(WALL, &FACTS, 0.5);
        assert!(!b.check(WALL, &FACTS).allowed);
        // The next day starts from zero, outage or not.
        assert!(b.check(WALL + 86_400_000, &FACTS).allowed);
        b.charge(WALL + 86_400_000, &FACTS, 3.0);
        assert_eq!(b.check(WALL + 86_400_000, &FACTS).spent_usd, 6.0);
    }

    #[test]
    fn a_counter_the_store_lost_is_handed_over_again_without_counting_twice() {
        let (l, b) = (rpm(10), daily(10.0));
        let _ = drain(&l, &b, WALL);
        assert_eq!(passes(&l, 0, 4), 4);
        b.charge(WALL, &FACTS, 3.0);
        let d = drain(&l, &b, WALL);
        assert!(apply(&l, &b, 0, WALL, &d[0].key, 6.0), "2 used elsewhere");
        assert!(apply(&l, &b, 0, WALL, &d[1].key, 3.0));
        // Redis restarted empty; another replica already pushed 1 request since.
        assert!(apply(&l, &b, 0, WALL, &d[0].key, 1.0));
        assert!(apply(&l, &b, 0, WALL, &d[1].key, 0.0));
        let again = drain(&l, &b, WALL);
        let amounts: Vec<f64> = again.iter().map(|d| d.amount).collect();
        assert_eq!(amounts, vec![4.0, 3.0], "our whole window, once");
        // 1 from elsewhere is less than the 2 already taken off the bucket: nothing more is.
        assert!(apply(&l, &b, 0, WALL, &again[0].key, 5.0));
        assert_eq!(passes(&l, 0, 10), 4);
        assert!(drain(&l, &b, WALL)
            .iter()
            .all(|d| d.amount == 4.0 && d.key == again[0].key));
        // Rounding in Redis is not a loss.
        assert!(apply(&l, &b, 0, WALL, &again[1].key, 3.0 - 1e-12));
        assert!(drain(&l, &b, WALL).is_empty());
    }

    /// The store's side of a tick, as the Lua script does it: deltas added, then slices
    /// granted of what is left.
    fn exchange(
        store: &mut std::collections::HashMap<String, f64>,
        l: &RateLimiter,
        b: &Budgets,
        replicas: f64,
    ) {
        let (deltas, leases) = tick(l, b, WALL);
        for d in deltas {
            let total = store.entry(d.key.clone()).or_default();
            *total += d.amount;
            assert!(apply(l, b, 0, WALL, &d.key, *total));
        }
        for w in leases {
            let total = store.entry(w.key.clone()).or_default();
            let left = w.limit - *total;
            let mut grant = (left / replicas).max(0.0);
            if w.unit > 0.0 {
                grant = (grant / w.unit).floor() * w.unit;
                if grant < w.unit && left >= w.unit {
                    grant = w.unit;
                }
            }
            *total += grant;
            assert!(apply_lease(l, b, 0, WALL, &w.key, grant, *total));
        }
    }

    #[test]
    fn replicas_admit_from_leases_so_a_burst_cannot_pass_the_limit() {
        let mut store = std::collections::HashMap::new();
        let replicas: Vec<(RateLimiter, Budgets)> = (0..4).map(|_| (rpm(20), daily(1.0))).collect();
        for (l, b) in &replicas {
            let _ = tick(l, b, WALL);
            set_replicas(l, b, 4);
        }
        // A burst before any grant: each replica has 20 / 4 on first sight.
        let admitted: usize = replicas.iter().map(|(l, _)| passes(l, 0, 10)).sum();
        assert_eq!(admitted, 20);
        for (l, b) in &replicas {
            exchange(&mut store, l, b, 4.0);
        }
        assert_eq!(
            store.values().sum::<f64>(),
            20.0,
            "spent, and nothing left to lease"
        );
        let admitted: usize = replicas.iter().map(|(l, _)| passes(l, 0, 10)).sum();
        assert_eq!(
            admitted, 0,
            "the limit holds across replicas (the bucket has not refilled)"
        );

        // Paced traffic on a fresh entity: one replica takes slices as it goes.
        let (l, b) = (rpm(20), daily(1.0));
        let mut store = std::collections::HashMap::new();
        let _ = tick(&l, &b, WALL);
        set_replicas(&l, &b, 2);
        let mut admitted = 0;
        for _ in 0..30 {
            admitted += passes(&l, 0, 2);
            exchange(&mut store, &l, &b, 2.0);
        }
        assert_eq!(admitted, 20, "the whole limit, in shrinking slices");
        assert_eq!(store.values().sum::<f64>(), 20.0);
    }

    #[test]
    fn an_idle_lease_is_handed_back_for_other_replicas() {
        let mut store = std::collections::HashMap::new();
        let (a, b) = ((rpm(20), daily(1.0)), (rpm(20), daily(1.0)));
        for (l, bg) in [&a, &b] {
            let _ = tick(l, bg, WALL);
            set_replicas(l, bg, 2);
        }
        assert_eq!(passes(&a.0, 0, 1), 1);
        exchange(&mut store, &a.0, &a.1, 2.0);
        let held: f64 = store.values().sum();
        assert_eq!(held, 10.0, "its first-sight share: half the limit");
        for _ in 0..crate::limits::lease::IDLE_TICKS + 1 {
            exchange(&mut store, &a.0, &a.1, 2.0);
        }
        assert_eq!(
            store.values().sum::<f64>(),
            2.0,
            "all but one unit handed back"
        );
        // The other replica may now use what is left (bucket permitting).
        assert_eq!(passes(&b.0, 0, 30), 10, "its first-sight share");
        exchange(&mut store, &b.0, &b.1, 2.0);
        exchange(&mut store, &b.0, &b.1, 2.0);
        assert_eq!(passes(&b.0, 0, 30), 4, "then slices of the 8 left");
    }

    #[test]
    fn budget_spend_comes_from_leases_across_replicas() {
        let mut store = std::collections::HashMap::new();
        let replicas: Vec<(RateLimiter, Budgets)> =
            (0..2).map(|_| (rpm(1000), daily(10.0))).collect();
        for (l, b) in &replicas {
            let _ = tick(l, b, WALL);
            set_replicas(l, b, 2);
        }
        // Each replica spends 1 per admitted request, admitted while its lease has room.
        let mut spent = 0.0;
        for _ in 0..20 {
            for (l, b) in &replicas {
                if b.check(WALL, &FACTS).allowed {
                    b.charge(WALL, &FACTS, 1.0);
                    spent += 1.0;
                }
                exchange(&mut store, l, b, 2.0);
            }
        }
        assert!((10.0..=11.0).contains(&spent), "{spent}");
    }
}
