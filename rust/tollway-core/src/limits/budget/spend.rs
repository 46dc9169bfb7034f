//! One entity's spend under one budget rule, for the request log's alerts (not the request
//! path): a child of `budget` so it reads the rule state without widening its API.

use super::Budgets;
use crate::limits::entity::entity_label;
use crate::limits::RequestFacts;
use std::sync::Arc;

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
        let c = self.rules.iter().find(|c| c.rule.id == rule_id)?;
        let period = c.rule.period.index(wall_ms);
        let entity = c.entity(facts);
        let spent = c
            .state
            .lock()
            .entries
            .get(entity)
            .map_or(0.0, |s| s.spent(period));
        let label = entity_label(&c.rule.applies_per, facts);
        Some((label, period, spent, c.rule.limit_usd))
    }
}

impl Budgets {
    /// Spend and limit of the entities each rule knows this period, largest spend first, at
    /// most `cap` per rule (for the `llm_gateway_budget_*_usd` gauges; not the request path).
    pub fn spend_view(&self, wall_ms: u64, cap: usize) -> Vec<BudgetSpend> {
        let mut out = Vec::new();
        for c in self.rules.iter() {
            let period = c.rule.period.index(wall_ms);
            let inner = c.state.lock();
            let mut rows: Vec<(Arc<str>, f64)> = inner
                .entries
                .iter()
                .filter_map(|(_, s)| Some((s.label.clone()?, s.spent(period))))
                .filter(|(_, spent)| *spent > 0.0)
                .collect();
            drop(inner);
            let largest_first = |a: &(Arc<str>, f64), b: &(Arc<str>, f64)| b.1.total_cmp(&a.1);
            if rows.len() > cap && cap > 0 {
                rows.select_nth_unstable_by(cap - 1, largest_first);
            }
            rows.truncate(cap);
            rows.sort_by(largest_first);
            out.extend(rows.into_iter().map(|(entity, spent)| BudgetSpend {
                rule: Arc::clone(&c.state.id),
                entity,
                spent_usd: spent,
                limit_usd: c.rule.limit_usd,
                audit: c.rule.audit_mode,
            }));
        }
        out
    }

    /// The entities that reached their limit since the last call, once each per crossing.
    pub fn take_crossings(&self) -> Vec<BudgetSpend> {
        let mut out = Vec::new();
        for c in self.rules.iter() {
            let taken = std::mem::take(&mut c.state.lock().extra);
            out.extend(taken.into_iter().map(|(entity, spent)| BudgetSpend {
                rule: Arc::clone(&c.state.id),
                entity: entity.unwrap_or_else(|| Arc::from("")),
                spent_usd: spent,
                limit_usd: c.rule.limit_usd,
                audit: c.rule.audit_mode,
            }));
        }
        out
    }
}

/// One entity's spend under one rule this period.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetSpend {
    pub rule: Arc<str>,
    /// `user=alice,metadata.project=x`; empty parts list: the empty string.
    pub entity: Arc<str>,
    pub spent_usd: f64,
    pub limit_usd: f64,
    pub audit: bool,
}

/// Dollars with enough digits to tell small amounts apart: `1.20`, `0.015`, `0.000012`.
pub fn usd(x: f64) -> String {
    if !x.is_finite() || x == 0.0 || x.abs() >= 1.0 {
        return format!("{x:.2}");
    }
    // Two significant digits, at least two decimals, trailing zeros past those dropped.
    let decimals = ((-x.abs().log10()).ceil() as usize + 1).clamp(2, 12);
    let s = format!("{x:.decimals$}");
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let keep = frac.trim_end_matches('0').len().max(2);
    format!("{int}.{}", &frac[..keep.min(frac.len())])
}
