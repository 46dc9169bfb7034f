//! The Python face of an admitted request (`tollway_core::Admission`): what `admit` decided,
//! read by the later phases (the guardrails' input call reads its metadata verdicts here).

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tollway_core::engine;

type RuleIds = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// An admitted request: key id, target ids in the order to try, merged metadata.
#[pyclass(frozen, module = "tollway._core")]
pub(crate) struct Admission {
    pub(crate) inner: engine::Admission,
}

#[pymethods]
impl Admission {
    #[getter]
    fn key(&self) -> u32 {
        self.inner.key
    }

    /// Index into `Engine.rules` of the routing rule applied, if any.
    #[getter]
    fn rule(&self) -> Option<u32> {
        self.inner.rule
    }

    /// Plan ids (into `Engine.plans`) in the order to try them.
    #[getter]
    fn plans(&self) -> Vec<u32> {
        self.inner.plans.clone()
    }

    /// `x-tfy-applied-configurations` value (JSON of rule ids by kind); "" when none applied.
    #[getter]
    fn applied(&self) -> &str {
        &self.inner.applied
    }

    /// Rule ids applied by kind: (routing, rate limit, budget, guardrails), for telemetry.
    #[getter]
    fn rule_ids(&self) -> RuleIds {
        let [a, b, c, d] = self.inner.rule_ids.clone();
        (a, b, c, d)
    }

    /// Guardrail ids (into `Engine.guardrails`) run on the request, before or beside the call.
    #[getter]
    fn input_guardrails(&self) -> Vec<u32> {
        self.inner.guardrails.input.clone()
    }

    /// Guardrail ids run on the answer.
    #[getter]
    fn output_guardrails(&self) -> Vec<u32> {
        self.inner.guardrails.output.clone()
    }

    /// `(guardrail id, violations)` of the metadata-validation guardrails that flag the
    /// request's metadata (messages name keys, never values).
    #[getter]
    fn metadata_violations(&self) -> Vec<(u32, Vec<String>)> {
        self.inner.metadata_violations.clone()
    }

    /// Guardrail ids for MCP tool calls: (on the arguments, on the result).
    #[getter]
    fn tool_guardrails(&self) -> (Vec<u32>, Vec<u32>) {
        let g = &self.inner.guardrails;
        (g.tool_pre.clone(), g.tool_post.clone())
    }

    /// The deciding budget rule is in audit mode and over its limit (let through, counted).
    #[getter]
    fn budget_over_audit(&self) -> bool {
        self.inner.budget_over_audit
    }

    /// The cost in USD reserved on budgets until settle (0.0 when none).
    #[getter]
    fn reserved_usd(&self) -> f64 {
        self.inner.reservation.as_ref().map_or(0.0, |r| r.usd())
    }

    /// `x-ratelimit-*` response headers when a rate limit applies, as ASGI wants them (bytes).
    #[getter]
    fn limit_headers<'py>(
        &self,
        py: Python<'py>,
    ) -> Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        self.inner
            .limit_headers
            .iter()
            .map(|(k, v)| {
                (
                    PyBytes::new(py, k.as_bytes()),
                    PyBytes::new(py, v.as_bytes()),
                )
            })
            .collect()
    }

    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.inner.metadata {
            d.set_item(k, v)?;
        }
        Ok(d)
    }
}
