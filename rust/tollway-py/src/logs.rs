//! What the request log's alerts read from an engine: budget spend per entity.

use crate::engine::Engine;
use pyo3::prelude::*;
use tollway_core::limits::RequestFacts;

/// `(entity label, period index, spent USD, limit USD)` of the entity a request with these
/// facts counts against under budget rule `rule_id`, this period; `None` for an unknown rule.
#[pyfunction]
fn budget_spend(
    engine: PyRef<'_, Engine>,
    rule_id: &str,
    subject: &str,
    model: &str,
    metadata: Vec<(String, String)>,
) -> Option<(String, u64, f64, f64)> {
    let e = &engine.inner;
    let facts = RequestFacts {
        subject,
        model,
        metadata: &metadata,
    };
    e.budgets.spend_of(rule_id, e.clock.wall_ms(), &facts)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(budget_spend, m)?)?;
    Ok(())
}
