//! What the replica sync (Redis, run by the host in the background) exchanges with an engine:
//! the engine picks the clocks and the limiters, the host only moves the values.

use super::Engine;
use crate::limits::sync::{self, LeaseRequest, SyncDelta};

impl Engine {
    /// Consumption since the last call; the first call switches tracking on and returns
    /// nothing.
    pub fn drain_deltas(&self) -> Vec<SyncDelta> {
        sync::drain(&self.rate_limiter, &self.budgets, self.clock.wall_ms())
    }

    /// One sync tick: the deltas (idle leases handed back among them, negative) and the
    /// leases to ask the store for.
    pub fn sync_tick(&self) -> (Vec<SyncDelta>, Vec<LeaseRequest>) {
        sync::tick(&self.rate_limiter, &self.budgets, self.clock.wall_ms())
    }

    /// Applies a lease the store granted and the counter's total after it; false when the
    /// name is no rule of this engine.
    pub fn apply_lease(&self, key: &str, grant: f64, total: f64) -> bool {
        let (now, wall) = (self.clock.now_ms(), self.clock.wall_ms());
        sync::apply_lease(
            &self.rate_limiter,
            &self.budgets,
            now,
            wall,
            key,
            grant,
            total,
        )
    }

    /// Applies a counter's global total; false when it names no rule of this engine.
    pub fn apply_remote(&self, key: &str, total: f64) -> bool {
        let (now, wall) = (self.clock.now_ms(), self.clock.wall_ms());
        sync::apply(&self.rate_limiter, &self.budgets, now, wall, key, total)
    }

    /// The store answers and `replicas` share it: admit from leases; 0 stops leasing.
    pub fn set_replicas(&self, replicas: u32) {
        sync::set_replicas(&self.rate_limiter, &self.budgets, replicas);
    }

    /// The store is unreachable: enforce `1/replicas` of every limit and budget locally;
    /// 1 when synced again.
    pub fn set_share(&self, replicas: u32) {
        sync::set_share(&self.rate_limiter, &self.budgets, replicas);
    }
}
