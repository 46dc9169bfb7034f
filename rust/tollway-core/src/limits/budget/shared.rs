//! The budgets' side of the exchange with the shared store: spend handed to the sync task,
//! global totals applied, leases asked for, granted and handed back, the outage share.

use super::{track, Budgets, Spend, DIRTY_CAP};
use crate::limits::config::BudgetPeriod;
use crate::limits::lease::{LeaseWant, Tick};
use crate::limits::Delta;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Budgets {
    /// Spend not yet handed to the sync task, per (rule, entity, period index); the first
    /// call switches tracking on.
    pub fn drain_deltas(&self) -> Vec<Delta> {
        let mut out = Vec::new();
        for b in &self.budgets {
            b.state.syncing.store(true, Ordering::Relaxed);
            let mut guard = b.state.lock();
            let inner = &mut *guard;
            let mut take = |entity: u64, s: &mut Spend| {
                if s.unsynced != 0.0 {
                    let amount = std::mem::take(&mut s.unsynced);
                    s.pushed += amount;
                    out.push(Delta {
                        rule_id: Arc::clone(&b.state.id),
                        entity,
                        window: s.period,
                        amount,
                    });
                }
            };
            if std::mem::take(&mut inner.dirty_overflow) {
                inner.dirty.clear();
                for (&entity, s) in inner.spend.iter_mut() {
                    take(entity, s);
                }
            } else {
                for entity in std::mem::take(&mut inner.dirty) {
                    if let Some(s) = inner.spend.get_mut(entity) {
                        take(entity, s);
                    }
                }
            }
        }
        out
    }

    /// Applies the global spend (all replicas, this one included) of one (rule, entity,
    /// period). Returns false for an unknown rule id.
    pub fn apply_remote(
        &self,
        wall_ms: u64,
        rule_id: &str,
        entity: u64,
        period: u64,
        total: f64,
    ) -> bool {
        let Some(b) = self.budgets.iter().find(|b| &*b.state.id == rule_id) else {
            return false;
        };
        let current = b.rule.period.index(wall_ms);
        if period < current {
            return true;
        }
        let mut guard = b.state.lock();
        let inner = &mut *guard;
        let s = inner
            .spend
            .entry(entity, || Spend::fresh(period, None), |s| s.idle(current));
        if period < s.period {
            return true;
        }
        s.roll(period);
        apply_total(
            s,
            entity,
            total,
            &mut inner.dirty,
            &mut inner.dirty_overflow,
        );
        true
    }

    /// The entities whose lease needs the store this tick: slices to ask for, and idle
    /// leases handed back (as negative spend for the next drain).
    pub fn lease_tick(&self, wall_ms: u64) -> Vec<LeaseWant> {
        let mut out = Vec::new();
        for b in &self.budgets {
            if b.state.leasing().is_none() {
                continue;
            }
            let period = b.rule.period.index(wall_ms);
            let keep = b.rule.limit_usd * 0.01;
            let mut guard = b.state.lock();
            let inner = &mut *guard;
            let entities: Vec<u64> = inner.leasing.iter().copied().collect();
            for entity in entities {
                let Some(s) = inner.spend.get_mut(entity) else {
                    inner.leasing.remove(&entity);
                    continue;
                };
                match s.lease.tick(keep) {
                    Tick::Ask => out.push(LeaseWant {
                        rule_id: Arc::clone(&b.state.id),
                        entity,
                        window: period,
                        limit: b.rule.limit_usd,
                        unit: 0.0,
                    }),
                    Tick::Return(usd) => {
                        let first = s.unsynced == 0.0;
                        s.unsynced -= usd;
                        if first {
                            inner.mark_dirty(entity);
                        }
                    }
                    Tick::Keep(true) => {}
                    Tick::Keep(false) => {
                        s.lease.tracked = false;
                        inner.leasing.remove(&entity);
                    }
                }
            }
        }
        out
    }

    /// A slice granted by the store, with the counter's total after it.
    pub fn apply_lease(
        &self,
        wall_ms: u64,
        rule_id: &str,
        entity: u64,
        period: u64,
        grant: f64,
        total: f64,
    ) -> bool {
        let Some(b) = self.budgets.iter().find(|b| &*b.state.id == rule_id) else {
            return false;
        };
        if period < b.rule.period.index(wall_ms) {
            return true;
        }
        let mut guard = b.state.lock();
        let inner = &mut *guard;
        let s = inner
            .spend
            .entry(entity, || Spend::fresh(period, None), |s| s.idle(period));
        if period < s.period {
            return true;
        }
        s.roll(period);
        s.lease.grant(grant);
        s.pushed += grant.max(0.0);
        track(&mut s.lease, entity, &mut inner.leasing);
        if let Some(s) = inner.spend.get_mut(entity) {
            apply_total(
                s,
                entity,
                total,
                &mut inner.dirty,
                &mut inner.dirty_overflow,
            );
        }
        true
    }

    /// Leasing on (`replicas` >= 1, the store answers) or off (0).
    pub fn set_replicas(&self, replicas: u32) {
        for b in &self.budgets {
            b.state.replicas.store(replicas, Ordering::Relaxed);
        }
    }

    /// While the shared store is unreachable, each of `replicas` replicas may spend only
    /// `1/replicas` of what was left of each budget when the outage began (a conservative
    /// local reservation); 1 restores the synced view. Lives with the rule's state, so a
    /// reload's adopted rules keep it.
    pub fn set_share(&self, replicas: u32) {
        let n = replicas.max(1);
        for b in &self.budgets {
            let old = b.state.share.swap(n, Ordering::Relaxed);
            if n > 1 && old <= 1 {
                b.state.outage.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The period of a rule (what its shared counters count per).
    pub fn period(&self, rule_id: &str) -> Option<BudgetPeriod> {
        self.budgets
            .iter()
            .find(|b| &*b.state.id == rule_id)
            .map(|b| b.rule.period)
    }
}

/// Applies a counter's global total to an entry rolled to the counter's period.
fn apply_total(s: &mut Spend, entity: u64, total: f64, dirty: &mut Vec<u64>, overflow: &mut bool) {
    if crate::limits::lost(total, s.pushed) {
        // The shared counter lost our part (the store restarted empty, or evicted the
        // key): the next drain hands it over again.
        if s.unsynced == 0.0 {
            if dirty.len() < DIRTY_CAP {
                dirty.push(entity);
            } else {
                *overflow = true;
            }
        }
        s.unsynced += s.pushed;
        s.pushed = 0.0;
        return;
    }
    s.others = s.others.max(total - s.pushed);
}
