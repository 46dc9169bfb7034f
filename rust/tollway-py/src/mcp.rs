//! The Python face of `tollway_core::mcp`: the MCP servers of a config, and the admission of
//! one tool call (functions over `Engine` and `Guardrails`, so those classes stay as they are).

use crate::engine::{Denial, Engine};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// An admitted tool call.
#[pyclass(frozen, module = "tollway._core")]
struct ToolAdmission {
    #[pyo3(get)]
    key: u32,
    #[pyo3(get)]
    rate_limit_rule: Option<String>,
    /// Guardrail ids (into `Engine.guardrails`) run on the arguments, and on the result.
    #[pyo3(get)]
    tool_pre: Vec<u32>,
    #[pyo3(get)]
    tool_post: Vec<u32>,
    #[pyo3(get)]
    guardrail_rule: Option<String>,
    metadata: Vec<(String, String)>,
}

#[pymethods]
impl ToolAdmission {
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.metadata {
            d.set_item(k, v)?;
        }
        Ok(d)
    }
}

/// `{"servers": [...], "virtual_servers": [...]}` as validated (with credentials).
#[pyfunction]
fn mcp_config_json(engine: PyRef<'_, Engine>) -> String {
    engine.inner.mcp.to_json()
}

/// Whether the key's `allowed_tools` let it call `server/tool`.
#[pyfunction]
fn tool_allowed(engine: PyRef<'_, Engine>, key: u32, server: &str, tool: &str) -> bool {
    engine.inner.tool_allowed(key, server, tool)
}

/// Decides one tool call of an authenticated key: a `ToolAdmission` or a `Denial`.
#[pyfunction]
#[pyo3(signature = (engine, key, server, tool, metadata=None, guardrails=None))]
fn admit_tool(
    py: Python<'_>,
    engine: PyRef<'_, Engine>,
    key: u32,
    server: &str,
    tool: &str,
    metadata: Option<&[u8]>,
    guardrails: Option<&[u8]>,
) -> PyResult<Py<PyAny>> {
    Ok(
        match engine
            .inner
            .admit_tool(key, server, tool, metadata, guardrails)
        {
            Ok(a) => Py::new(
                py,
                ToolAdmission {
                    key: a.key,
                    rate_limit_rule: a.rate_limit_rule,
                    tool_pre: a.tool_pre,
                    tool_post: a.tool_post,
                    guardrail_rule: a.guardrail_rule,
                    metadata: a.metadata,
                },
            )?
            .into_any(),
            Err(d) => Py::new(py, Denial::from(d))?.into_any(),
        },
    )
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ToolAdmission>()?;
    m.add_function(wrap_pyfunction!(mcp_config_json, m)?)?;
    m.add_function(wrap_pyfunction!(tool_allowed, m)?)?;
    m.add_function(wrap_pyfunction!(admit_tool, m)?)?;
    Ok(())
}
