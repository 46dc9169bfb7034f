//! Shared state across replicas: what the Redis sync task exchanges with an engine (the
//! core `Engine`'s sync methods; this file only converts).

use crate::engine::Engine;
use pyo3::prelude::*;
use tollway_core::limits::sync::SyncDelta;

fn deltas(d: Vec<SyncDelta>) -> Vec<(String, f64, u64)> {
    d.into_iter().map(|d| (d.key, d.amount, d.ttl_ms)).collect()
}

/// Consumption since the last call as `(counter name, amount, ttl_ms)`; the first call
/// switches tracking on and returns nothing.
#[pyfunction]
fn drain_deltas(engine: PyRef<'_, Engine>) -> Vec<(String, f64, u64)> {
    deltas(engine.inner.drain_deltas())
}

/// One sync tick: `(deltas, leases)`, deltas as in `drain_deltas` (idle leases handed back
/// among them, negative) and leases to ask for as `(counter name, limit, unit, ttl_ms)`.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn sync_tick(engine: PyRef<'_, Engine>) -> (Vec<(String, f64, u64)>, Vec<(String, f64, f64, u64)>) {
    let (d, leases) = engine.inner.sync_tick();
    let leases = leases
        .into_iter()
        .map(|l| (l.key, l.limit, l.unit, l.ttl_ms));
    (deltas(d), leases.collect())
}

/// Applies a lease the store granted and the counter's total after it; false when the
/// name is no rule of this engine.
#[pyfunction]
fn apply_lease(engine: PyRef<'_, Engine>, key: &str, grant: f64, total: f64) -> bool {
    engine.inner.apply_lease(key, grant, total)
}

/// The store answers and `replicas` share it: admit from leases; 0 stops leasing.
#[pyfunction]
fn set_replicas(engine: PyRef<'_, Engine>, replicas: u32) {
    engine.inner.set_replicas(replicas);
}

/// Applies a counter's global total; false when it names no rule of this engine.
#[pyfunction]
fn apply_remote(engine: PyRef<'_, Engine>, key: &str, total: f64) -> bool {
    engine.inner.apply_remote(key, total)
}

/// Redis unreachable: enforce `1/replicas` of every limit and budget locally; 1 when synced.
#[pyfunction]
fn set_share(engine: PyRef<'_, Engine>, replicas: u32) {
    engine.inner.set_share(replicas);
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(drain_deltas, m)?)?;
    m.add_function(wrap_pyfunction!(apply_remote, m)?)?;
    m.add_function(wrap_pyfunction!(set_share, m)?)?;
    m.add_function(wrap_pyfunction!(sync_tick, m)?)?;
    m.add_function(wrap_pyfunction!(apply_lease, m)?)?;
    m.add_function(wrap_pyfunction!(set_replicas, m)?)?;
    Ok(())
}
