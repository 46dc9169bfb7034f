//! Rate limits, budgets and cost: config, per-entity state in bounded maps, and the values
//! `admit` and `settle` need (a denial with its headers, a ticket, a cost in USD).
//!
//! State lives per rule behind an `Arc`, so a reloaded engine adopts the live counters of
//! unchanged rules, and every counter records what it consumed since the last sync, so a
//! background task can exchange totals with Redis without touching the request path. Both
//! kinds are built on one `RuleSet` (`ruleset.rs`): matching, entity maps, adopting state on a
//! reload and the exchange with the shared store exist once.

pub mod budget;
pub mod config;
pub mod cost;
pub mod entity;
pub mod lease;
mod map;
pub mod ratelimit;
pub mod reserve;
mod ruleset;
pub mod sync;

pub use budget::{BudgetDecision, Budgets};
pub use config::{parse_budgets, parse_rate_limits, BudgetRule, KeyPart, LimitKind, RateLimitRule};
pub use cost::{Cost, CostTable, Price};
pub use ratelimit::{Decision, RateLimiter, Ticket};
pub use reserve::{RequestSize, Reservation};

/// Default cap on the entities (buckets or budgets) each rule keeps in memory.
pub const DEFAULT_MAX_ENTITIES: usize = 100_000;

pub use crate::when::RequestFacts;

/// Consumption of one (rule, entity, window) since the last sync, for a background task to
/// add to a shared counter (Redis `INCRBYFLOAT` on `rule:entity:window`).
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub rule_id: std::sync::Arc<str>,
    pub entity: u64,
    /// Wall-clock window index: `wall_ms / window_ms` for rate limits, the budget period
    /// index for budgets; windows are aligned across replicas.
    pub window: u64,
    pub amount: f64,
}

/// A shared counter reads less than what this replica alone added to it: the store lost
/// it (restarted empty, or evicted the key). The margin absorbs decimal rounding in Redis.
pub(crate) fn lost(total: f64, pushed: f64) -> bool {
    total < pushed - 1e-9 * pushed.max(1.0)
}
