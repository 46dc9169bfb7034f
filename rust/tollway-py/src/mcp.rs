//! The Python face of `tollway_core::mcp`: the MCP servers of a config, and the admission of
//! one tool call (functions over `Engine` and `Guardrails`, so those classes stay as they are).

use crate::engine::{Denial, Engine};
use crate::guardrails::Guardrails;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A matched rule: pre-invoke ids, post-invoke ids, rule id.
type ToolRule = (Vec<u32>, Vec<u32>, String);

/// An admitted tool call.
#[pyclass(frozen, module = "tollway._core")]
struct ToolAdmission {
    #[pyo3(get)]
    key: u32,
    #[pyo3(get)]
    rate_limit_rule: Option<String>,
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
#[pyo3(signature = (engine, key, server, tool, metadata=None))]
fn admit_tool(
    py: Python<'_>,
    engine: PyRef<'_, Engine>,
    key: u32,
    server: &str,
    tool: &str,
    metadata: Option<&[u8]>,
) -> PyResult<Py<PyAny>> {
    Ok(match engine.inner.admit_tool(key, server, tool, metadata) {
        Ok(a) => Py::new(
            py,
            ToolAdmission {
                key: a.key,
                rate_limit_rule: a.rate_limit_rule,
                metadata: a.metadata,
            },
        )?
        .into_any(),
        Err(d) => Py::new(py, Denial::from(d))?.into_any(),
    })
}

/// The first guardrails rule for a tool call as `(pre ids, post ids, rule id)`, or None.
#[pyfunction]
#[pyo3(signature = (guardrails, subject, server, tool, metadata=None))]
fn tool_guardrails_rule(
    guardrails: PyRef<'_, Guardrails>,
    subject: &str,
    server: &str,
    tool: &str,
    metadata: Option<&Bound<'_, PyDict>>,
) -> PyResult<Option<ToolRule>> {
    let mut md = Vec::new();
    if let Some(d) = metadata {
        for (k, v) in d.iter() {
            md.push((k.extract()?, v.extract()?));
        }
    }
    Ok(guardrails
        .set()
        .matching_tool_rule(subject, server, tool, &md)
        .map(|r| (r.tool_pre.clone(), r.tool_post.clone(), r.id.clone())))
}

/// `X-TFY-GUARDRAILS`' tool lists as `(pre ids, post ids)`, or a message for the error.
#[pyfunction]
fn tool_guardrails_header(
    py: Python<'_>,
    guardrails: PyRef<'_, Guardrails>,
    raw: &[u8],
) -> PyResult<Py<PyAny>> {
    Ok(match guardrails.set().parse_tool_header(raw) {
        Ok(ids) => ids.into_pyobject(py)?.into_any().unbind(),
        Err(message) => message.into_pyobject(py)?.into_any().unbind(),
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ToolAdmission>()?;
    m.add_function(wrap_pyfunction!(mcp_config_json, m)?)?;
    m.add_function(wrap_pyfunction!(tool_allowed, m)?)?;
    m.add_function(wrap_pyfunction!(admit_tool, m)?)?;
    m.add_function(wrap_pyfunction!(tool_guardrails_rule, m)?)?;
    m.add_function(wrap_pyfunction!(tool_guardrails_header, m)?)?;
    Ok(())
}
