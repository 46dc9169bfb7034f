//! The budgets' side of the exchange with the shared store (see `ruleset/shared.rs`): spend
//! handed to the sync task, global totals applied, leases asked for, granted and handed
//! back, the outage share.

use super::Budgets;
use crate::limits::config::BudgetPeriod;
use crate::limits::lease::LeaseWant;
use crate::limits::Delta;

impl Budgets {
    /// Spend not yet handed to the sync task, per (rule, entity, period index); the first
    /// call switches tracking on.
    pub fn drain_deltas(&self, wall_ms: u64) -> Vec<Delta> {
        self.rules.drain_deltas(wall_ms)
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
        self.rules
            .apply_remote(wall_ms, rule_id, entity, period, total)
    }

    /// The entities whose lease needs the store this tick: slices to ask for, and idle
    /// leases handed back (as negative spend for the next drain).
    pub fn lease_tick(&self, wall_ms: u64) -> Vec<LeaseWant> {
        self.rules.lease_tick(wall_ms)
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
        self.rules
            .apply_lease(wall_ms, rule_id, entity, period, grant, total)
    }

    /// Leasing on (`replicas` >= 1, the store answers) or off (0).
    pub fn set_replicas(&self, replicas: u32) {
        self.rules.set_replicas(replicas);
    }

    /// While the shared store is unreachable, each of `replicas` replicas may spend only
    /// `1/replicas` of what was left of each budget when the outage began (a conservative
    /// local reservation); 1 restores the synced view. Lives with the rule's state, so a
    /// reload's adopted rules keep it.
    pub fn set_share(&self, replicas: u32) {
        self.rules.set_share(replicas);
    }

    /// The period of a rule (what its shared counters count per).
    pub fn period(&self, rule_id: &str) -> Option<BudgetPeriod> {
        self.rules.find(rule_id).map(|c| c.rule.period)
    }
}
