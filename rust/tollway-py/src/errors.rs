//! The one exception hierarchy of the binding and the one mapping from core errors to it.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

create_exception!(
    _core,
    ConfigError,
    PyValueError,
    "The config is invalid; args[0] is the list of every error, each naming its path."
);

/// The one mapping from core errors to Python: config errors carry all messages.
pub(crate) fn config_error(errors: &[tollway_core::ConfigError]) -> PyErr {
    ConfigError::new_err(errors.iter().map(ToString::to_string).collect::<Vec<_>>())
}

/// A caller passed a value the core cannot use (an unknown id, a bad batch); a bug, not input.
pub(crate) fn invalid(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}
