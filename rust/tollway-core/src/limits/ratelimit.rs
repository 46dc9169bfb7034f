//! Token-bucket rate limits: the first matching rule decides, per entity.
//!
//! A bucket holds up to `limit` units and refills continuously at `limit` per period, so a
//! full bucket equals a fresh one. Requests units are taken at admission. Token units cannot
//! be known at admission: a request is admitted while its bucket is above zero and reserves
//! nothing; `debit` charges the real usage at settle and may take the bucket below zero, which
//! delays the next requests until it refills. (Reserving an estimate would need `max_tokens`,
//! which most clients leave unset; the overshoot is bounded by the requests in flight and is
//! paid back by the negative balance.)

use super::config::{KeyPart, LimitKind, RateLimitRule, RatePeriod};
use super::entity::entity_key;
use super::lease::Lease;
use super::map::BoundedMap;
use super::RequestFacts;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

mod shared;

#[derive(Debug)]
struct Bucket {
    level: f64,
    /// Monotonic ms of the last refill.
    last_ms: u64,
    /// Consumed here since the last `drain_deltas`.
    unsynced: f64,
    /// The wall-clock window `pushed` and `others` belong to.
    window: u64,
    /// Our consumption handed to the sync task in `window`.
    pushed: f64,
    /// Other replicas' consumption in `window`, already taken from `level`.
    others: f64,
    /// This replica's slice of the shared limit (see `lease.rs`).
    lease: Lease,
}

impl Bucket {
    fn fresh(cap: f64, now: u64) -> Self {
        Self {
            level: cap,
            last_ms: now,
            unsynced: 0.0,
            window: 0,
            pushed: 0.0,
            others: 0.0,
            lease: Lease::default(),
        }
    }

    /// Equal to a fresh bucket: full, nothing to sync, no lease held.
    fn idle(&self, now: u64, cap: f64, rate: f64, syncing: bool) -> bool {
        self.full_at(now, cap, rate) && !(syncing && self.unsynced != 0.0) && self.lease.left == 0.0
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
        if window > self.window {
            self.window = window;
            self.pushed = 0.0;
            self.others = 0.0;
        }
    }
}

#[derive(Debug)]
struct Inner {
    buckets: BoundedMap<Bucket>,
    sync: SyncState,
}

/// Which entities the sync task must visit.
#[derive(Debug, Default)]
struct SyncState {
    /// Entities with unsynced consumption, so a sync visits only those.
    dirty: Vec<u64>,
    /// `dirty` hit its cap: the next drain scans every bucket instead.
    overflow: bool,
    /// Entities whose lease the sync task looks after.
    leasing: HashSet<u64>,
}

/// The live state of one rule, shared with the engine a reload builds when the rule keeps
/// its id, unit and `rate_limit_applies_per`.
#[derive(Debug)]
struct Shared {
    id: Arc<str>,
    shape: (LimitKind, RatePeriod, Vec<KeyPart>),
    inner: Mutex<Inner>,
    /// Set by the first `drain_deltas`: consumption is then tracked for the sync task.
    syncing: AtomicBool,
    /// Replicas sharing the limit while the shared store is unreachable (1: the whole limit
    /// is ours to enforce, with other replicas' use arriving through `apply_remote`).
    share: AtomicU32,
    /// Replicas sharing the limit through leases; 0: not leasing (no shared store).
    replicas: AtomicU32,
    allowed: AtomicU64,
    denied: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves numbers, never broken invariants.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct Limit {
    rule: RateLimitRule,
    cap: f64,
    /// Units per millisecond.
    rate: f64,
    state: Arc<Shared>,
}

impl Limit {
    /// Capacity and refill rate in force: during an outage of the shared store, this
    /// replica's share of the limit, but at least one unit (a limit of 2 over 4 replicas
    /// still lets a request through now and then rather than none at all).
    fn effective(&self) -> (f64, f64) {
        let share = self.state.share.load(Ordering::Relaxed);
        if share <= 1 {
            return (self.cap, self.rate);
        }
        let n = f64::from(share);
        ((self.cap / n).max(self.cap.min(1.0)), self.rate / n)
    }

    /// Replicas sharing the limit by leases, when admission must stay within a lease: the
    /// store is reachable (no outage share) and syncing is on.
    fn leasing(&self, syncing: bool) -> Option<u32> {
        let n = self.state.replicas.load(Ordering::Relaxed);
        (syncing && n > 0 && self.state.share.load(Ordering::Relaxed) <= 1).then_some(n)
    }

    /// Grants are whole requests; token grants may be any amount.
    fn unit(&self) -> f64 {
        match self.rule.kind {
            LimitKind::Requests => 1.0,
            LimitKind::Tokens => 0.0,
        }
    }

    /// What an idle entity keeps of its lease: a request, or 1% of a token limit.
    fn keep(&self) -> f64 {
        self.unit().max(self.cap * 0.01).min(self.cap)
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
    limits: Vec<Limit>,
    max_entities: usize,
}

impl RateLimiter {
    /// Each rule keeps at most `max_entities` buckets in memory.
    pub fn new(rules: Vec<RateLimitRule>, max_entities: usize) -> Self {
        let limits = rules
            .into_iter()
            .map(|rule| {
                let cap = rule.limit as f64;
                let rate = cap / rule.period.ms() as f64;
                let state = Arc::new(Shared {
                    id: Arc::from(rule.id.as_str()),
                    shape: (rule.kind, rule.period, rule.applies_per.clone()),
                    inner: Mutex::new(Inner {
                        buckets: BoundedMap::new(max_entities),
                        sync: SyncState::default(),
                    }),
                    syncing: AtomicBool::new(false),
                    share: AtomicU32::new(1),
                    replicas: AtomicU32::new(0),
                    allowed: AtomicU64::new(0),
                    denied: AtomicU64::new(0),
                });
                Limit {
                    rule,
                    cap,
                    rate,
                    state,
                }
            })
            .collect();
        Self {
            limits,
            max_entities,
        }
    }

    /// Takes over the live buckets of every rule of `old` with the same id, unit and
    /// `rate_limit_applies_per` (a changed `limit_to` keeps them; levels are clamped to the
    /// new capacity). Call before the new limiter serves requests. Returns how many.
    pub fn adopt(&mut self, old: &RateLimiter) -> usize {
        let mut adopted = 0;
        for l in &mut self.limits {
            if let Some(o) = old
                .limits
                .iter()
                .find(|o| o.state.id == l.state.id && o.state.shape == l.state.shape)
            {
                l.state = Arc::clone(&o.state);
                l.state.lock().buckets.set_cap(self.max_entities);
                adopted += 1;
            }
        }
        adopted
    }

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    pub fn rule_id(&self, rule: u32) -> &str {
        self.limits
            .get(rule as usize)
            .map_or("", |l| l.rule.id.as_str())
    }

    /// Decides one request against the first matching rule; requests units are taken now.
    pub fn check(&self, now_ms: u64, facts: &RequestFacts<'_>) -> Decision {
        let Some((i, l)) = self
            .limits
            .iter()
            .enumerate()
            .find(|(_, l)| l.rule.when.matches(facts))
        else {
            return Decision::UNLIMITED;
        };
        let entity = entity_key(&l.rule.applies_per, facts);
        let syncing = l.state.syncing.load(Ordering::Relaxed);
        let mut guard = l.state.lock();
        let inner = &mut *guard;
        let (cap, rate) = l.effective();
        let leasing = l.leasing(syncing);
        let b = inner.buckets.entry(
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
            let share = b
                .lease
                .first_sight((cap / f64::from(n)).max(l.unit().min(cap)));
            if share > 0.0 {
                if b.unsynced == 0.0 {
                    mark_dirty(entity, &mut inner.sync.dirty, &mut inner.sync.overflow);
                }
                b.unsynced += share;
                track(&mut b.lease, entity, &mut inner.sync.leasing);
            }
            if b.lease.left < need.max(f64::MIN_POSITIVE) {
                allowed = false;
                by_lease = true;
                b.lease.starved = true;
                track(&mut b.lease, entity, &mut inner.sync.leasing);
            }
        }
        if allowed && l.rule.kind == LimitKind::Requests {
            consume(b, 1.0, entity, syncing, leasing.is_some(), &mut inner.sync);
        }
        let level = b.level;
        drop(guard);
        let counter = if allowed {
            &l.state.allowed
        } else {
            &l.state.denied
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let rule = u32::try_from(i).unwrap_or(u32::MAX);
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
        let Some(l) = self.limits.get(ticket.rule as usize) else {
            return;
        };
        let syncing = l.state.syncing.load(Ordering::Relaxed);
        let mut guard = l.state.lock();
        let inner = &mut *guard;
        let (cap, rate) = l.effective();
        let leasing = l.leasing(syncing).is_some();
        let b = inner.buckets.entry(
            ticket.entity,
            || Bucket::fresh(cap, now_ms),
            |b| b.idle(now_ms, cap, rate, syncing),
        );
        b.refill(now_ms, cap, rate);
        consume(
            b,
            tokens as f64,
            ticket.entity,
            syncing,
            leasing,
            &mut inner.sync,
        );
    }

    pub fn stats(&self) -> Vec<RuleStats> {
        self.limits
            .iter()
            .map(|l| {
                let inner = l.state.lock();
                RuleStats {
                    id: Arc::clone(&l.state.id),
                    entities: inner.buckets.len(),
                    allowed: l.state.allowed.load(Ordering::Relaxed),
                    denied: l.state.denied.load(Ordering::Relaxed),
                    evicted_live: inner.buckets.evicted_live,
                }
            })
            .collect()
    }

    /// A client-facing message for a denial, naming the rule.
    pub fn message(&self, d: &Decision) -> String {
        let Some(l) = d.rule.and_then(|r| self.limits.get(r as usize)) else {
            return String::new();
        };
        format!(
            "Rate limit exceeded: rule '{}' allows {} {} per {}. Retry after {} s.",
            l.rule.id,
            l.rule.limit,
            l.rule.kind.header_suffix(),
            l.rule.period.name(),
            d.retry_after_s
        )
    }
}

/// Takes `amount` from the bucket; with syncing on, what no lease covered is handed to the
/// sync task (all of it when not leasing).
fn consume(
    b: &mut Bucket,
    amount: f64,
    entity: u64,
    syncing: bool,
    leasing: bool,
    sync: &mut SyncState,
) {
    b.level -= amount;
    if !syncing || amount <= 0.0 {
        return;
    }
    let shared = if leasing {
        let debt = b.lease.take(amount);
        track(&mut b.lease, entity, &mut sync.leasing);
        debt
    } else {
        amount
    };
    if shared > 0.0 {
        if b.unsynced == 0.0 {
            mark_dirty(entity, &mut sync.dirty, &mut sync.overflow);
        }
        b.unsynced += shared;
    }
}

fn track(lease: &mut Lease, entity: u64, leasing: &mut HashSet<u64>) {
    if !lease.tracked {
        lease.tracked = true;
        leasing.insert(entity);
    }
}

fn mark_dirty(entity: u64, dirty: &mut Vec<u64>, overflow: &mut bool) {
    if dirty.len() < DIRTY_CAP {
        dirty.push(entity);
    } else {
        *overflow = true;
    }
}

/// Beyond this many dirty entities between two syncs, the next sync scans all buckets.
const DIRTY_CAP: usize = 65_536;
