//! The rate limiter's side of the exchange with the shared store: consumption handed to the
//! sync task, global totals applied, leases asked for, granted and handed back, the outage
//! share.

use super::{mark_dirty, track, Bucket, RateLimiter};
use crate::limits::config::{LimitKind, RatePeriod};
use crate::limits::lease::{LeaseWant, Tick};
use crate::limits::Delta;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl RateLimiter {
    /// Hands the sync task everything consumed since the last call, per (rule, entity,
    /// window of `wall_ms`); the first call switches tracking on.
    pub fn drain_deltas(&self, wall_ms: u64) -> Vec<Delta> {
        let mut out = Vec::new();
        for l in &self.limits {
            l.state.syncing.store(true, Ordering::Relaxed);
            let window = wall_ms / l.rule.period.ms();
            let mut guard = l.state.lock();
            let inner = &mut *guard;
            let mut take = |entity: u64, b: &mut Bucket| {
                if b.unsynced != 0.0 {
                    b.roll(window);
                    b.pushed += b.unsynced;
                    out.push(Delta {
                        rule_id: Arc::clone(&l.state.id),
                        entity,
                        window,
                        amount: b.unsynced,
                    });
                    b.unsynced = 0.0;
                }
            };
            if std::mem::take(&mut inner.sync.overflow) {
                inner.sync.dirty.clear();
                for (&entity, b) in inner.buckets.iter_mut() {
                    take(entity, b);
                }
            } else {
                for entity in std::mem::take(&mut inner.sync.dirty) {
                    if let Some(b) = inner.buckets.get_mut(entity) {
                        take(entity, b);
                    }
                }
            }
        }
        out
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
        self.apply_sync(now_ms, rule_id, entity, window, None, total)
    }

    /// The entities whose lease needs the store this tick: slices to ask for, and idle
    /// leases handed back (as negative consumption for the next drain).
    pub fn lease_tick(&self, wall_ms: u64) -> Vec<LeaseWant> {
        let mut out = Vec::new();
        for l in &self.limits {
            if l.leasing(l.state.syncing.load(Ordering::Relaxed)).is_none() {
                continue;
            }
            let window = wall_ms / l.rule.period.ms();
            let keep = l.keep();
            let mut guard = l.state.lock();
            let inner = &mut *guard;
            let entities: Vec<u64> = inner.sync.leasing.iter().copied().collect();
            for entity in entities {
                let Some(b) = inner.buckets.get_mut(entity) else {
                    inner.sync.leasing.remove(&entity);
                    continue;
                };
                match b.lease.tick(keep) {
                    Tick::Ask => out.push(LeaseWant {
                        rule_id: Arc::clone(&l.state.id),
                        entity,
                        window,
                        limit: l.cap,
                        unit: l.unit(),
                    }),
                    Tick::Return(units) => {
                        if b.unsynced == 0.0 {
                            mark_dirty(entity, &mut inner.sync.dirty, &mut inner.sync.overflow);
                        }
                        b.unsynced -= units;
                    }
                    Tick::Keep(true) => {}
                    Tick::Keep(false) => {
                        b.lease.tracked = false;
                        inner.sync.leasing.remove(&entity);
                    }
                }
            }
        }
        out
    }

    /// A slice granted by the store, with the counter's total after it.
    pub fn apply_lease(
        &self,
        now_ms: u64,
        rule_id: &str,
        entity: u64,
        window: u64,
        grant: f64,
        total: f64,
    ) -> bool {
        self.apply_sync(now_ms, rule_id, entity, window, Some(grant), total)
    }

    /// What the store answered for one (rule, entity, window): the counter's total, and the
    /// slice it granted when one was asked for.
    fn apply_sync(
        &self,
        now_ms: u64,
        rule_id: &str,
        entity: u64,
        window: u64,
        grant: Option<f64>,
        total: f64,
    ) -> bool {
        let Some(l) = self.limits.iter().find(|l| &*l.state.id == rule_id) else {
            return false;
        };
        let mut guard = l.state.lock();
        let inner = &mut *guard;
        let (cap, rate) = l.effective();
        let b = inner.buckets.entry(
            entity,
            || Bucket::fresh(cap, now_ms),
            |b| b.idle(now_ms, cap, rate, true),
        );
        if let Some(grant) = grant {
            b.lease.grant(grant);
            track(&mut b.lease, entity, &mut inner.sync.leasing);
        }
        if window < b.window {
            // A window that has passed: a grant is usable, counted there.
            return true;
        }
        b.refill(now_ms, cap, rate);
        b.roll(window);
        b.pushed += grant.unwrap_or(0.0).max(0.0);
        apply_total(
            b,
            entity,
            total,
            &mut inner.sync.dirty,
            &mut inner.sync.overflow,
        );
        true
    }

    /// Leasing on (`replicas` >= 1, the store answers) or off (0).
    pub fn set_replicas(&self, replicas: u32) {
        for l in &self.limits {
            l.state.replicas.store(replicas, Ordering::Relaxed);
        }
    }

    /// While the shared store is unreachable, each of `replicas` replicas enforces
    /// `limit / replicas` (capacity and refill) from its own buckets; 1 restores the whole
    /// limit. The share lives with the rule's state, so a reload's adopted rules keep it.
    pub fn set_share(&self, replicas: u32) {
        for l in &self.limits {
            l.state.share.store(replicas.max(1), Ordering::Relaxed);
        }
    }

    /// The unit of a rule (what its shared counters count, per which window).
    pub fn unit(&self, rule_id: &str) -> Option<(LimitKind, RatePeriod)> {
        self.limits
            .iter()
            .find(|l| &*l.state.id == rule_id)
            .map(|l| (l.rule.kind, l.rule.period))
    }

    /// The length of a rule's sync window in ms (the period of its unit), for key expiry.
    pub fn window_ms(&self, rule_id: &str) -> Option<u64> {
        self.limits
            .iter()
            .find(|l| &*l.state.id == rule_id)
            .map(|l| l.rule.period.ms())
    }
}

/// Applies a counter's global total to a bucket rolled to the counter's window.
fn apply_total(b: &mut Bucket, entity: u64, total: f64, dirty: &mut Vec<u64>, overflow: &mut bool) {
    if crate::limits::lost(total, b.pushed) {
        // The shared counter lost our part (the store restarted empty, or evicted the
        // key): hand it over again. What others used stays taken from the bucket.
        if b.unsynced == 0.0 {
            mark_dirty(entity, dirty, overflow);
        }
        b.unsynced += b.pushed;
        b.pushed = 0.0;
        return;
    }
    let others = (total - b.pushed).max(0.0);
    if others > b.others {
        b.level -= others - b.others;
        b.others = others;
    }
}
