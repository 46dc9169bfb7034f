//! The Python face of `tollway_core::guardrails`: one compiled `Guardrails` per config, and
//! findings with offsets in characters (Python string indices), never the matched text.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;
use tollway_core::guardrails::{self as g, GuardrailId, GuardrailSet, Scanner};
use tollway_core::schema::Errors;

/// Something a guardrail found; `start`/`end` index the Python string.
#[pyclass(frozen, module = "tollway._core")]
struct Finding {
    #[pyo3(get)]
    guardrail: u32,
    #[pyo3(get)]
    category: String,
    #[pyo3(get)]
    start: usize,
    #[pyo3(get)]
    end: usize,
}

/// A matched rule: input guardrail ids, output guardrail ids, rule id.
type MatchedRule = (Vec<u32>, Vec<u32>, String);

#[pymethods]
impl Finding {
    fn __repr__(&self) -> String {
        format!(
            "Finding(guardrail={}, category={:?}, start={}, end={})",
            self.guardrail, self.category, self.start, self.end
        )
    }
}

/// One built-in guardrail run on one text.
#[pyclass(frozen, module = "tollway._core")]
struct Check {
    #[pyo3(get)]
    guardrail: u32,
    #[pyo3(get)]
    flagged: bool,
    #[pyo3(get)]
    score: Option<f64>,
    #[pyo3(get)]
    findings: Vec<Py<Finding>>,
}

/// What the request path needs to run one guardrail.
#[pyclass(frozen, module = "tollway._core")]
struct GuardrailInfo {
    #[pyo3(get)]
    id: u32,
    #[pyo3(get)]
    name: String,
    #[pyo3(get)]
    kind: &'static str,
    #[pyo3(get)]
    operation: &'static str,
    #[pyo3(get)]
    enforcing_strategy: &'static str,
    #[pyo3(get)]
    url: Option<String>,
    #[pyo3(get)]
    timeout_ms: Option<u64>,
    #[pyo3(get)]
    headers: Vec<(String, String)>,
    #[pyo3(get)]
    threshold: Option<f64>,
}

/// Byte offsets to char offsets; findings come sorted or nearly so, and texts are mostly
/// ASCII (where the two agree), so this is cheap.
fn char_offset(text: &str, byte: usize) -> usize {
    if text.is_ascii() {
        byte
    } else {
        text[..byte].chars().count()
    }
}

fn to_py(py: Python<'_>, text: &str, id: GuardrailId, f: &g::Finding) -> PyResult<Py<Finding>> {
    Py::new(
        py,
        Finding {
            guardrail: id,
            category: f.category.to_string(),
            start: char_offset(text, f.start),
            end: char_offset(text, f.end),
        },
    )
}

fn metadata_pairs(metadata: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(d) = metadata {
        for (k, v) in d.iter() {
            out.push((k.extract()?, v.extract()?));
        }
    }
    Ok(out)
}

/// The compiled guardrails of one config; immutable, shared by every request.
#[pyclass(frozen, module = "tollway._core")]
pub struct Guardrails {
    inner: Arc<GuardrailSet>,
}

impl Guardrails {
    pub fn from_set(inner: Arc<GuardrailSet>) -> Self {
        Self { inner }
    }

    pub(crate) fn set(&self) -> &GuardrailSet {
        &self.inner
    }

    fn ids(&self, ids: Vec<u32>) -> PyResult<Vec<GuardrailId>> {
        match ids.iter().find(|&&id| self.inner.get(id).is_none()) {
            Some(bad) => Err(PyValueError::new_err(format!("no guardrail with id {bad}"))),
            None => Ok(ids),
        }
    }
}

#[pymethods]
impl Guardrails {
    /// Compiles the `gateway-guardrails-config` documents among `[{"source": str, "doc":
    /// {...}}, ...]` (the list `Engine` takes; other document types are skipped).
    #[new]
    fn new(documents_json: &[u8]) -> PyResult<Self> {
        let docs: serde_json::Value = serde_json::from_slice(documents_json)
            .map_err(|e| PyValueError::new_err(format!("documents are not valid JSON: {e}")))?;
        let mut cfg = g::GuardrailsConfig::default();
        let mut errs = Errors::new("");
        for item in docs.as_array().map(Vec::as_slice).unwrap_or_default() {
            let doc = item.get("doc").unwrap_or(item);
            if doc.get("type").and_then(|t| t.as_str()) != Some("gateway-guardrails-config") {
                continue;
            }
            errs.set_source(item.get("source").and_then(|s| s.as_str()).unwrap_or(""));
            g::parse(doc, &mut cfg, &mut errs);
        }
        if !errs.is_empty() {
            return Err(crate::errors::config_error(&errs.list));
        }
        GuardrailSet::compile(&cfg)
            .map(|set| Self {
                inner: Arc::new(set),
            })
            .map_err(|e| crate::errors::config_error(&e))
    }

    #[getter]
    fn names(&self) -> Vec<String> {
        self.inner
            .guardrails
            .iter()
            .map(|g| g.name.clone())
            .collect()
    }

    fn id(&self, name: &str) -> Option<u32> {
        self.inner.id(name)
    }

    fn info(&self, id: u32) -> PyResult<GuardrailInfo> {
        let gr = self
            .inner
            .get(id)
            .ok_or_else(|| PyValueError::new_err("no such guardrail id"))?;
        let (url, timeout_ms, headers) = match &gr.scanner {
            Scanner::Webhook {
                url,
                timeout_ms,
                headers,
            } => (Some(url.clone()), Some(*timeout_ms), headers.clone()),
            _ => (None, None, Vec::new()),
        };
        let threshold = match &gr.scanner {
            Scanner::Injection(s) => Some(s.threshold),
            _ => None,
        };
        Ok(GuardrailInfo {
            id,
            name: gr.name.clone(),
            kind: gr.kind,
            operation: gr.operation.name(),
            enforcing_strategy: gr.strategy.name(),
            url,
            timeout_ms,
            headers,
            threshold,
        })
    }

    /// `(input ids, output ids)` of the first rule matching the request.
    #[pyo3(signature = (subject, model, metadata=None))]
    fn for_request(
        &self,
        subject: &str,
        model: &str,
        metadata: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<(Vec<u32>, Vec<u32>)> {
        let md = metadata_pairs(metadata)?;
        let (i, o) = self.inner.for_request(subject, model, &md);
        Ok((i.to_vec(), o.to_vec()))
    }

    /// The first matching rule as `(input ids, output ids, rule id)`, or None: one match
    /// gives the request path both its guardrails and the id for its response header.
    #[pyo3(signature = (subject, model, metadata=None))]
    fn rule_for(
        &self,
        subject: &str,
        model: &str,
        metadata: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Option<MatchedRule>> {
        let md = metadata_pairs(metadata)?;
        Ok(self
            .inner
            .matching_rule(subject, model, &md)
            .map(|r| (r.input.to_vec(), r.output.to_vec(), r.id.clone())))
    }

    /// The id of the first rule matching the request (for `x-tfy-applied-configurations`).
    #[pyo3(signature = (subject, model, metadata=None))]
    fn rule_for_request(
        &self,
        subject: &str,
        model: &str,
        metadata: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Option<String>> {
        let md = metadata_pairs(metadata)?;
        Ok(self
            .inner
            .matching_rule(subject, model, &md)
            .map(|r| r.id.clone()))
    }

    /// `X-TFY-GUARDRAILS` to `(input ids, output ids)`, or a message for a 400.
    fn parse_header(&self, py: Python<'_>, raw: &[u8]) -> PyResult<Py<PyAny>> {
        Ok(match self.inner.parse_header(raw) {
            Ok(ids) => ids.into_pyobject(py)?.into_any().unbind(),
            Err(message) => message.into_pyobject(py)?.into_any().unbind(),
        })
    }

    /// Runs one built-in guardrail; `None` for webhook and metadata-validation.
    fn check(&self, py: Python<'_>, id: u32, text: &str) -> PyResult<Option<Check>> {
        self.ids(vec![id])?;
        let Some(c) = self.inner.check(id, text) else {
            return Ok(None);
        };
        let findings = c
            .findings
            .iter()
            .map(|f| to_py(py, text, id, f))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Some(Check {
            guardrail: id,
            flagged: c.flagged,
            score: c.score,
            findings,
        }))
    }

    /// Findings of every text-scanning guardrail in `ids`, by position.
    fn scan(&self, py: Python<'_>, ids: Vec<u32>, text: &str) -> PyResult<Vec<Py<Finding>>> {
        let ids = self.ids(ids)?;
        self.inner
            .scan(&ids, text)
            .iter()
            .map(|(id, f)| to_py(py, text, *id, f))
            .collect()
    }

    /// `(redacted text, merged findings)` with the pii/secrets/regex guardrails in `ids`.
    fn redact(
        &self,
        py: Python<'_>,
        ids: Vec<u32>,
        text: &str,
    ) -> PyResult<(String, Vec<Py<Finding>>)> {
        let ids = self.ids(ids)?;
        let (out, found) = self.inner.redact(&ids, text);
        // Merged findings may span guardrails; they are reported under the first id.
        let first = ids.first().copied().unwrap_or(0);
        let found = found
            .iter()
            .map(|f| to_py(py, text, first, f))
            .collect::<PyResult<_>>()?;
        Ok((out, found))
    }

    fn stream_redactor(&self, ids: Vec<u32>) -> PyResult<StreamRedactor> {
        let ids = self.ids(ids)?;
        Ok(StreamRedactor {
            inner: self.inner.stream_redactor(&ids),
        })
    }

    /// Violation messages (naming keys, never values); empty when the metadata passes.
    fn validate_metadata(&self, id: u32, metadata: &Bound<'_, PyDict>) -> PyResult<Vec<String>> {
        self.ids(vec![id])?;
        let md = metadata_pairs(Some(metadata))?;
        Ok(self
            .inner
            .validate_metadata(id, &md)
            .iter()
            .map(ToString::to_string)
            .collect())
    }
}

/// Redacts one stream of text deltas, holding back only a tail that could still become a
/// match; `finish()` flushes it. Not thread-safe: one per stream.
#[pyclass(module = "tollway._core")]
struct StreamRedactor {
    inner: g::StreamRedactor,
}

#[pymethods]
impl StreamRedactor {
    fn feed(&mut self, delta: &str) -> String {
        self.inner.feed(delta)
    }

    fn finish(&mut self) -> String {
        self.inner.finish()
    }

    /// Characters received but not yet emitted (bytes for non-ASCII text).
    #[getter]
    fn pending(&self) -> usize {
        self.inner.pending()
    }

    /// Categories redacted so far, in order.
    #[getter]
    fn categories(&self) -> Vec<String> {
        self.inner
            .findings()
            .iter()
            .map(|f| f.category.to_string())
            .collect()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Guardrails>()?;
    m.add_class::<GuardrailInfo>()?;
    m.add_class::<Check>()?;
    m.add_class::<Finding>()?;
    m.add_class::<StreamRedactor>()?;
    Ok(())
}
