//! The Python face of tollway-core: conversions and one error mapping, no logic.

mod admission;
mod asgi;
mod engine;
mod errors;
mod guardrails;
mod logs;
mod mcp;
mod meter;
mod otlp;
mod record;
mod scrub;
mod sigv4;
mod state;
mod texts;

use admission::Admission;
use engine::{Denial, Engine, Key, Outcome, Plan, Settings, Target};
use errors::ConfigError;
use pyo3::prelude::*;

// The core allocates many small, short-lived values per call (OTLP attributes, parsed
// events); mimalloc's thread-local free lists serve them about twice as fast as glibc.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    asgi::register(m)?;
    otlp::register(m)?;
    meter::register(m)?;
    guardrails::register(m)?;
    state::register(m)?;
    logs::register(m)?;
    scrub::register(m)?;
    mcp::register(m)?;
    record::register(m)?;
    Ok(())
}
