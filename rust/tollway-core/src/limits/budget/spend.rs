//! One entity's spend under one budget rule, for the request log's alerts (not the request
//! path): a child of `budget` so it reads the rule state without widening its API.

use super::Budgets;
use crate::limits::entity::{entity_key, entity_label};
use crate::limits::RequestFacts;

impl Budgets {
    /// The spend of the entity a request counts against under rule `rule_id`, this period:
    /// `(entity label as in the budget gauges, period index, spent, limit)`; `None` for an
    /// unknown rule.
    pub fn spend_of(
        &self,
        rule_id: &str,
        wall_ms: u64,
        facts: &RequestFacts<'_>,
    ) -> Option<(String, u64, f64, f64)> {
        let b = self.budgets.iter().find(|b| b.rule.id == rule_id)?;
        let period = b.rule.period.index(wall_ms);
        let entity = entity_key(&b.rule.applies_per, facts);
        let spent = b
            .state
            .lock()
            .spend
            .get(entity)
            .map_or(0.0, |s| s.spent(period));
        let label = entity_label(&b.rule.applies_per, facts);
        Some((label, period, spent, b.rule.limit_usd))
    }
}
