//! Token-bucket rate limits: the first matching rule decides, per entity.
//!
//! A bucket holds up to `limit` units and refills continuously at `limit` per period, so a
//! full bucket equals a fresh one. Requests units are taken at admission. Token units cannot
//! be known at admission: a request is admitted while its bucket is above zero and reserves
//! nothing; `debit` charges the real usage at settle and may take the bucket below zero, which
//! delays the next requests until it refills. (Reserving an estimate would need `max_tokens`,
//! which most clients leave unset; the overshoot is bounded by the requests in flight and is
//! paid back by the negative balance.)

use super::config::{KeyPart, LimitKind, RateLimitRule};
use super::ruleset::{Entry, LimitRule, RuleSet, SyncState, Synced};
use super::{Delta, RequestFacts};
use crate::when::When;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One entity's bucket.
#[derive(Debug)]
pub(crate) struct Bucket {
    level: f64,
    /// Monotonic ms of the last refill.
    last_ms: u64,
    /// Consumption handed to the sync task; `others` are already taken from `level`.
    sync: Synced,
}

impl Entry for Bucket {
    fn synced(&mut self) -> &mut Synced {
        &mut self.sync
    }
}

impl Bucket {
    fn fresh(cap: f64, now: u64) -> Self {
        Self {
            level: cap,
            last_ms: now,
            sync: Synced::default(),
        }
    }

    /// Equal to a fresh bucket: full, nothing to sync, no lease held.
    fn idle(&self, now: u64, cap: f64, rate: f64, syncing: bool) -> bool {
        self.full_at(now, cap, rate)
            && !(syncing && self.sync.unsynced != 0.0)
            && self.sync.lease.left == 0.0
    }

    fn refill(&mut self, now: u64, cap: f64, rate: f64) {
        let dt = now.saturating_sub(self.last_ms);
        // `min` also clamps a level above a capacity lowered by a reload.
        self.level = (self.level + dt as f64 * rate).min(cap);
        self.last_ms = self.last_ms.max(now);
    }

    fn full_at(&self, now: u64, cap: f64, rate: f64) -> bool {
        self.level + now.saturating_sub(self.last_ms) as f64 * rate >= cap
    }

    fn roll(&mut self, window: u64) {
        let s = &mut self.sync;
        if window > s.window {
            s.window = window;
            s.pushed = 0.0;
            s.others = 0.0;
        }
    }

    /// Takes `amount` from the bucket; with syncing on, what no lease covered is handed to
    /// the sync task (all of it when not leasing).
    fn consume(
        &mut self,
        amount: f64,
        entity: u64,
        syncing: bool,
        leasing: bool,
        sync: &mut SyncState,
    ) {
        self.level -= amount;
        if syncing && amount > 0.0 {
            sync.used(&mut self.sync, entity, amount, leasing);
        }
    }
}

/// A rate-limit rule with its capacity and refill rate.
#[derive(Debug)]
pub(crate) struct Limit {
    rule: RateLimitRule,
    cap: f64,
    /// Units per millisecond.
    rate: f64,
}

impl Limit {
    /// Capacity and refill rate in force: during an outage of the shared store, this
    /// replica's share of the limit, but at least one unit (a limit of 2 over 4 replicas
    /// still lets a request through now and then rather than none at all).
    fn effective(&self, share: u32) -> (f64, f64) {
        if share <= 1 {
            return (self.cap, self.rate);
        }
        let n = f64::from(share);
        ((self.cap / n).max(self.cap.min(1.0)), self.rate / n)
    }

    /// Grants are whole requests; token grants may be any amount.
    fn unit(&self) -> f64 {
        match self.rule.kind {
            LimitKind::Requests => 1.0,
            LimitKind::Tokens => 0.0,
        }
    }
}

/// Counters of one rule, for metrics.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    allowed: AtomicU64,
    denied: AtomicU64,
}

impl LimitRule for Limit {
    type Entry = Bucket;
    type Counters = Counts;
    type Extra = ();
    const LEASE_OUTLIVES_WINDOW: bool = true;
    const COUNTER_PREFIX: &'static str = "rl";

    fn id(&self) -> &str {
        &self.rule.id
    }

    fn when(&self) -> &When {
        &self.rule.when
    }

    fn applies_per(&self) -> &[KeyPart] {
        &self.rule.applies_per
    }

    /// The same unit and `rate_limit_applies_per` (a changed `limit_to` keeps the buckets;
    /// levels are clamped to the new capacity).
    fn same_shape(&self, other: &Self) -> bool {
        (self.rule.kind, self.rule.period, &self.rule.applies_per)
            == (other.rule.kind, other.rule.period, &other.rule.applies_per)
    }

    fn unit_name(&self) -> String {
        format!(
            "{}_per_{}",
            self.rule.kind.header_suffix(),
            self.rule.period.name()
        )
    }

    fn window(&self, wall_ms: u64) -> u64 {
        wall_ms / self.rule.period.ms()
    }

    fn counter_ttl_ms(&self) -> u64 {
        2 * self.rule.period.ms()
    }

    /// What an idle entity keeps of its lease: a request, or 1% of a token limit.
    fn lease_terms(&self) -> (f64, f64, f64) {
        let keep = self.unit().max(self.cap * 0.01).min(self.cap);
        (self.cap, self.unit(), keep)
    }

    fn fresh(&self, now: u64, _window: u64, share: u32) -> Bucket {
        Bucket::fresh(self.effective(share).0, now)
    }

    fn idle(&self, b: &Bucket, now: u64, share: u32) -> bool {
        let (cap, rate) = self.effective(share);
        b.idle(now, cap, rate, true)
    }

    fn passed(&self, _now: u64, _window: u64) -> bool {
        false
    }

    fn advance(&self, b: &mut Bucket, now: u64, window: u64, share: u32) {
        let (cap, rate) = self.effective(share);
        b.refill(now, cap, rate);
        b.roll(window);
    }

    fn drain_window(&self, b: &mut Bucket, window: u64) -> u64 {
        b.roll(window);
        window
    }

    /// What other replicas used is taken from the bucket.
    fn others_used(&self, b: &mut Bucket, more: f64) {
        b.level -= more;
    }
}

/// Identifies the bucket an admitted request is charged to at settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub rule: u32,
    pub entity: u64,
}

/// The outcome of a check, with the numbers for the `x-ratelimit-*` headers either way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Index of the rule that applied (see [`RateLimiter::rule_id`]); `None`: no rule matched.
    pub rule: Option<u32>,
    pub kind: LimitKind,
    pub limit: u64,
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset_ms: u64,
    /// Whole seconds until the request would pass; 0 when allowed.
    pub retry_after_s: u64,
    /// For token rules: pass to [`RateLimiter::debit`] at settle.
    pub ticket: Option<Ticket>,
}

impl Decision {
    pub const UNLIMITED: Self = Self {
        allowed: true,
        rule: None,
        kind: LimitKind::Requests,
        limit: 0,
        remaining: 0,
        reset_ms: 0,
        retry_after_s: 0,
        ticket: None,
    };

    /// OpenAI's rate-limit headers (none when no rule applied), and `retry-after` on a denial.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        if self.rule.is_none() {
            return Vec::new();
        }
        let names = match self.kind {
            LimitKind::Requests => [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
            LimitKind::Tokens => [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        };
        let mut out = vec![
            (names[0], self.limit.to_string()),
            (names[1], self.remaining.to_string()),
            (names[2], duration(self.reset_ms)),
        ];
        if !self.allowed {
            out.push(("retry-after", self.retry_after_s.to_string()));
        }
        out
    }
}

/// A duration the way OpenAI's reset headers write it: `20ms`, `1s`, `6m0s`, `1h0m0s`.
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms.div_ceil(1000);
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec}s"),
        (h, min, sec) => format!("{h}h{min}m{sec}s"),
    }
}

/// Counters of one rule, for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleStats {
    pub id: Arc<str>,
    pub entities: usize,
    pub allowed: u64,
    pub denied: u64,
    /// Entities dropped by the memory cap while their bucket was not full.
    pub evicted_live: u64,
}

#[derive(Debug)]
pub struct RateLimiter {
    pub(super) rules: RuleSet<Limit>,
}

impl RateLimiter {
    /// Each rule keeps at most `max_entities` buckets in memory.
    pub fn new(rules: Vec<RateLimitRule>, max_entities: usize) -> Self {
        let limits = rules
            .into_iter()
            .map(|rule| {
                let cap = rule.limit as f64;
                let rate = cap / rule.period.ms() as f64;
                Limit { rule, cap, rate }
            })
            .collect();
        Self {
            rules: RuleSet::new(limits, max_entities),
        }
    }

    /// Takes over the live buckets of every rule of `old` with the same id, unit and
    /// `rate_limit_applies_per` (a changed `limit_to` keeps them; levels are clamped to the
    /// new capacity). Call before the new limiter serves requests. Returns how many.
    pub fn adopt(&mut self, old: &RateLimiter) -> usize {
        self.rules.adopt(&old.rules)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rule_id(&self, rule: u32) -> &str {
        self.rules.rule_id(rule)
    }

    /// Decides one request against the first matching rule; requests units are taken now.
    pub fn check(&self, now_ms: u64, facts: &RequestFacts<'_>) -> Decision {
        let Some((rule, c)) = self.rules.first_match(facts) else {
            return Decision::UNLIMITED;
        };
        let (l, state) = (&c.rule, &*c.state);
        let entity = c.entity(facts);
        let syncing = state.syncing();
        let mut guard = state.lock();
        let inner = &mut *guard;
        let (cap, rate) = l.effective(state.share());
        let leasing = state.leasing(syncing);
        let b = inner.entries.entry(
            entity,
            || Bucket::fresh(cap, now_ms),
            |b| b.idle(now_ms, cap, rate, syncing),
        );
        b.refill(now_ms, cap, rate);
        let (mut allowed, need): (bool, f64) = match l.rule.kind {
            LimitKind::Requests => (b.level >= 1.0, 1.0),
            LimitKind::Tokens => (b.level > 0.0, 0.0),
        };
        let mut by_lease = false;
        if let (true, Some(n)) = (allowed, leasing) {
            // At least one request, as during an outage: a limit smaller than the replica
            // count still lets a request through on first sight rather than none.
            let share = (cap / f64::from(n)).max(l.unit().min(cap));
            inner.sync.first_sight(&mut b.sync, entity, share);
            if b.sync.lease.left < need.max(f64::MIN_POSITIVE) {
                allowed = false;
                by_lease = true;
                inner.sync.starve(&mut b.sync, entity);
            }
        }
        if allowed && l.rule.kind == LimitKind::Requests {
            b.consume(1.0, entity, syncing, leasing.is_some(), &mut inner.sync);
        }
        let level = b.level;
        drop(guard);
        let counter = if allowed {
            &state.counters.allowed
        } else {
            &state.counters.denied
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let retry_after_s = if allowed {
            0
        } else if by_lease {
            // Refused by the lease, not the bucket: the next grant is a sync away.
            1
        } else {
            // Tokens need the level strictly above zero: one more millisecond of refill.
            let ms = ((need - level) / rate).ceil() as u64 + u64::from(need == 0.0);
            ms.div_ceil(1000).max(1)
        };
        Decision {
            allowed,
            rule: Some(rule),
            kind: l.rule.kind,
            limit: l.rule.limit,
            remaining: level.max(0.0).floor() as u64,
            reset_ms: ((cap - level) / rate).ceil() as u64,
            retry_after_s,
            ticket: (allowed && l.rule.kind == LimitKind::Tokens)
                .then_some(Ticket { rule, entity }),
        }
    }

    /// Charges the real token usage of an admitted request; the bucket may go negative.
    pub fn debit(&self, now_ms: u64, ticket: Ticket, tokens: u64) {
        let Some(c) = self.rules.get(ticket.rule) else {
            return;
        };
        let syncing = c.state.syncing();
        let mut guard = c.state.lock();
        let inner = &mut *guard;
        let (cap, rate) = c.rule.effective(c.state.share());
        let leasing = c.state.leasing(syncing).is_some();
        let b = inner.entries.entry(
            ticket.entity,
            || Bucket::fresh(cap, now_ms),
            |b| b.idle(now_ms, cap, rate, syncing),
        );
        b.refill(now_ms, cap, rate);
        b.consume(
            tokens as f64,
            ticket.entity,
            syncing,
            leasing,
            &mut inner.sync,
        );
    }

    pub fn stats(&self) -> Vec<RuleStats> {
        self.rules.stats(|c, entities, evicted_live| RuleStats {
            id: Arc::clone(&c.state.id),
            entities,
            allowed: c.state.counters.allowed.load(Ordering::Relaxed),
            denied: c.state.counters.denied.load(Ordering::Relaxed),
            evicted_live,
        })
    }

    /// A client-facing message for a denial, naming the rule.
    pub fn message(&self, d: &Decision) -> String {
        let Some(c) = d.rule.and_then(|r| self.rules.get(r)) else {
            return String::new();
        };
        let rule = &c.rule.rule;
        format!(
            "Rate limit exceeded: rule '{}' allows {} {} per {}. Retry after {} s.",
            rule.id,
            rule.limit,
            rule.kind.header_suffix(),
            rule.period.name(),
            d.retry_after_s
        )
    }
}

/// The rate limiter's side of the exchange with the shared store (see `ruleset/shared.rs`).
impl RateLimiter {
    /// Hands the sync task everything consumed since the last call, per (rule, entity,
    /// window of `wall_ms`); the first call switches tracking on.
    pub fn drain_deltas(&self, wall_ms: u64) -> Vec<Delta> {
        self.rules.drain_deltas(wall_ms)
    }

    /// Applies a global total (all replicas, this one included) for one (rule, entity,
    /// window): what other replicas consumed since the last call is taken from the bucket.
    /// Returns false for an unknown rule id.
    pub fn apply_remote(
        &self,
        now_ms: u64,
        rule_id: &str,
        entity: u64,
        window: u64,
        total: f64,
    ) -> bool {
        self.rules
            .apply_remote(now_ms, rule_id, entity, window, total)
    }

    /// The length of a rule's sync window in ms (the period of its unit), for key expiry.
    pub fn window_ms(&self, rule_id: &str) -> Option<u64> {
        self.rules.find(rule_id).map(|c| c.rule.rule.period.ms())
    }
}
