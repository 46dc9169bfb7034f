//! A rule set's side of the exchange with the shared store: consumption handed to the sync
//! task, global totals applied, leases asked for, granted and handed back.

use super::{Entry, LimitRule, RuleSet, SyncState, Synced};
use crate::limits::lease::{LeaseWant, Tick};
use crate::limits::Delta;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl<R: LimitRule> RuleSet<R> {
    /// Hands the sync task everything consumed since the last call, per (rule, entity,
    /// window of `wall_ms`); the first call switches tracking on.
    pub fn drain_deltas(&self, wall_ms: u64) -> Vec<Delta> {
        let mut out = Vec::new();
        for c in &self.rules {
            c.state.syncing.store(true, Ordering::Relaxed);
            let current = c.rule.window(wall_ms);
            let mut guard = c.state.lock();
            let inner = &mut *guard;
            let mut take = |entity: u64, e: &mut R::Entry| {
                if e.synced().unsynced != 0.0 {
                    let window = c.rule.drain_window(e, current);
                    let s = e.synced();
                    let amount = std::mem::take(&mut s.unsynced);
                    s.pushed += amount;
                    out.push(Delta {
                        rule_id: Arc::clone(&c.state.id),
                        entity,
                        window,
                        amount,
                    });
                }
            };
            if std::mem::take(&mut inner.sync.overflow) {
                inner.sync.dirty.clear();
                for (&entity, e) in inner.entries.iter_mut() {
                    take(entity, e);
                }
            } else {
                for entity in std::mem::take(&mut inner.sync.dirty) {
                    if let Some(e) = inner.entries.get_mut(entity) {
                        take(entity, e);
                    }
                }
            }
        }
        out
    }

    /// The entities whose lease needs the store this tick: slices to ask for, and idle
    /// leases handed back (as negative consumption for the next drain).
    pub fn lease_tick(&self, wall_ms: u64) -> Vec<LeaseWant> {
        let mut out = Vec::new();
        for c in &self.rules {
            if c.state.leasing(c.state.syncing()).is_none() {
                continue;
            }
            let window = c.rule.window(wall_ms);
            let (limit, unit, keep) = c.rule.lease_terms();
            let mut guard = c.state.lock();
            let inner = &mut *guard;
            let entities: Vec<u64> = inner.sync.leasing.iter().copied().collect();
            for entity in entities {
                let Some(e) = inner.entries.get_mut(entity) else {
                    inner.sync.leasing.remove(&entity);
                    continue;
                };
                let s = e.synced();
                match s.lease.tick(keep) {
                    Tick::Ask => out.push(LeaseWant {
                        rule_id: Arc::clone(&c.state.id),
                        entity,
                        window,
                        limit,
                        unit,
                    }),
                    Tick::Return(units) => inner.sync.add(s, entity, -units),
                    Tick::Keep(true) => {}
                    Tick::Keep(false) => {
                        s.lease.tracked = false;
                        inner.sync.leasing.remove(&entity);
                    }
                }
            }
        }
        out
    }

    /// Applies a global total (all replicas, this one included) for one (rule, entity,
    /// window). Returns false for an unknown rule id.
    pub fn apply_remote(
        &self,
        now: u64,
        rule_id: &str,
        entity: u64,
        window: u64,
        total: f64,
    ) -> bool {
        self.apply_sync(now, rule_id, entity, window, None, total)
    }

    /// A slice granted by the store, with the counter's total after it.
    pub fn apply_lease(
        &self,
        now: u64,
        rule_id: &str,
        entity: u64,
        window: u64,
        grant: f64,
        total: f64,
    ) -> bool {
        self.apply_sync(now, rule_id, entity, window, Some(grant), total)
    }

    /// What the store answered for one (rule, entity, window): the counter's total, and the
    /// slice it granted when one was asked for.
    fn apply_sync(
        &self,
        now: u64,
        rule_id: &str,
        entity: u64,
        window: u64,
        grant: Option<f64>,
        total: f64,
    ) -> bool {
        let Some(c) = self.find(rule_id) else {
            return false;
        };
        if c.rule.passed(now, window) {
            return true;
        }
        let share = c.state.share();
        let mut guard = c.state.lock();
        let inner = &mut *guard;
        let e = inner.entries.entry(
            entity,
            || c.rule.fresh(now, window, share),
            |e| c.rule.idle(e, now, share),
        );
        let grant_lease = |e: &mut R::Entry, sync: &mut SyncState| {
            if let Some(grant) = grant {
                let s = e.synced();
                s.lease.grant(grant);
                sync.track(&mut s.lease, entity);
            }
        };
        if R::LEASE_OUTLIVES_WINDOW {
            grant_lease(e, &mut inner.sync);
        }
        if window < e.synced().window {
            // A window that has passed for this entity.
            return true;
        }
        c.rule.advance(e, now, window, share);
        if !R::LEASE_OUTLIVES_WINDOW {
            grant_lease(e, &mut inner.sync);
        }
        e.synced().pushed += grant.unwrap_or(0.0).max(0.0);
        let more = apply_total(e.synced(), entity, total, &mut inner.sync);
        if more > 0.0 {
            c.rule.others_used(e, more);
        }
        true
    }
}

/// Applies a counter's global total to an entry in the counter's window; returns how much
/// more than known before other replicas used.
fn apply_total(s: &mut Synced, entity: u64, total: f64, sync: &mut SyncState) -> f64 {
    if crate::limits::lost(total, s.pushed) {
        // The shared counter lost our part (the store restarted empty, or evicted the
        // key): the next drain hands it over again.
        let pushed = std::mem::take(&mut s.pushed);
        sync.add(s, entity, pushed);
        return 0.0;
    }
    let others = (total - s.pushed).max(0.0);
    if others > s.others {
        let more = others - s.others;
        s.others = others;
        return more;
    }
    0.0
}
