//! The Python face of tollway-core: conversions and one error mapping, no logic.

mod engine;
mod errors;
mod guardrails;
mod meter;
mod otlp;
mod state;

use engine::{Admission, Denial, Engine, Key, Outcome, Plan, Settings, Target};
use errors::ConfigError;
use pyo3::prelude::*;

// Safe without the GIL: frozen classes hold immutable or atomic state, and mutable ones
// (meters, redactors) are borrow-checked by PyO3 per call.
#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("ConfigError", m.py().get_type::<ConfigError>())?;
    m.add_class::<Engine>()?;
    m.add_class::<Admission>()?;
    m.add_class::<Outcome>()?;
    m.add_class::<Denial>()?;
    m.add_class::<Settings>()?;
    m.add_class::<Target>()?;
    m.add_class::<Key>()?;
    m.add_class::<Plan>()?;
    otlp::register(m)?;
    meter::register(m)?;
    guardrails::register(m)?;
    state::register(m)?;
    Ok(())
}
