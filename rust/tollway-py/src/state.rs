//! Shared state across replicas: what the Redis sync task exchanges with an engine.

use crate::engine::Engine;
use pyo3::prelude::*;
use tollway_core::limits::sync;

/// Consumption since the last call as `(counter name, amount, ttl_ms)`; the first call
/// switches tracking on and returns nothing.
#[pyfunction]
fn drain_deltas(engine: PyRef<'_, Engine>) -> Vec<(String, f64, u64)> {
    let e = &engine.inner;
    sync::drain(&e.rate_limiter, &e.budgets, e.clock.wall_ms())
        .into_iter()
        .map(|d| (d.key, d.amount, d.ttl_ms))
        .collect()
}

/// Applies a counter's global total; false when it names no rule of this engine.
#[pyfunction]
fn apply_remote(engine: PyRef<'_, Engine>, key: &str, total: f64) -> bool {
    let e = &engine.inner;
    sync::apply(
        &e.rate_limiter,
        &e.budgets,
        e.clock.now_ms(),
        e.clock.wall_ms(),
        key,
        total,
    )
}

/// Redis unreachable: enforce `1/replicas` of every limit and budget locally; 1 when synced.
#[pyfunction]
fn set_share(engine: PyRef<'_, Engine>, replicas: u32) {
    let e = &engine.inner;
    sync::set_share(&e.rate_limiter, &e.budgets, replicas);
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(drain_deltas, m)?)?;
    m.add_function(wrap_pyfunction!(apply_remote, m)?)?;
    m.add_function(wrap_pyfunction!(set_share, m)?)?;
    Ok(())
}
