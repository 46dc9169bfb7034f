//! The Python face of `tollway_core::guardrails`: one compiled `Guardrails` per config, and
//! findings with offsets in characters (Python string indices), never the matched text.

use crate::admission::Admission;
use crate::errors::invalid;
use crate::texts::RequestTexts;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyDict, PyString};
use std::sync::Arc;
use tollway_core::clock::Clock;
use tollway_core::guardrails::{
    self as g, GuardrailId, GuardrailSet, Outcome, Phase, PhaseRun, Scanner, Strategy, Verdict,
};

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

/// What the request path needs to run one guardrail. The strings are Python strings made once
/// (the request path reads them per run: a getter over a Rust string made a new one each time).
#[pyclass(frozen, module = "tollway._core")]
struct GuardrailInfo {
    #[pyo3(get)]
    id: u32,
    #[pyo3(get)]
    name: Py<PyString>,
    #[pyo3(get)]
    kind: Py<PyString>,
    #[pyo3(get)]
    operation: Py<PyString>,
    #[pyo3(get)]
    enforcing_strategy: Py<PyString>,
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

/// The compiled guardrails of one config; immutable, shared by every request.
#[pyclass(frozen, module = "tollway._core")]
pub(crate) struct Guardrails {
    inner: Arc<GuardrailSet>,
    /// Each guardrail's name as a Python string, made once (every run record carries one).
    names: Vec<Py<PyString>>,
}

/// What `run_output` returns: the changed texts `(index, text)`, the runs as `GuardrailRun`
/// field tuples, the `flag` runs as `(name, phase, categories as found)` for the log, and the
/// block `(id, categories)` if a run blocked. `run_input` writes the changed texts back into
/// the request and says only whether there were any (`InputOut`).
type PhaseOut = (Vec<(usize, String)>, Vec<RunTuple>, Flags, Blocked);
type InputOut = (bool, Vec<RunTuple>, Flags, Blocked);
type Flags = Option<Vec<(Py<PyString>, Py<PyString>, String)>>;
type Blocked = Option<(u32, Vec<String>)>;
type RunTuple = (
    Py<PyString>,
    Py<PyString>,
    Py<PyString>,
    u64,
    u64,
    Vec<String>,
);

static CLOCK: Clock = Clock::System;

/// The span's `phase` and `result` names: Python strings made once per process.
fn phase_name(py: Python<'_>, phase: Phase) -> Py<PyString> {
    let s = match phase {
        Phase::Input => intern!(py, "input"),
        Phase::Output => intern!(py, "output"),
    };
    s.clone().unbind()
}

fn result_name(py: Python<'_>, verdict: Verdict) -> Py<PyString> {
    let s = match verdict {
        Verdict::Pass => intern!(py, "pass"),
        Verdict::Flag => intern!(py, "flag"),
        Verdict::Mutate => intern!(py, "mutate"),
        Verdict::Block => intern!(py, "block"),
        Verdict::Error => intern!(py, "error"),
    };
    s.clone().unbind()
}

impl Guardrails {
    pub(crate) fn from_set(py: Python<'_>, inner: Arc<GuardrailSet>) -> Self {
        let names = inner
            .guardrails
            .iter()
            .map(|g| PyString::new(py, &g.name).unbind())
            .collect();
        Self { inner, names }
    }

    /// The core's runs as the Python side records and logs them.
    fn phase_out(&self, py: Python<'_>, out: PhaseRun) -> PhaseOut {
        let mut flags = None;
        let runs = out
            .runs
            .iter()
            .map(|r| {
                let name = self.names[r.guardrail as usize].clone_ref(py);
                let phase = phase_name(py, r.phase);
                if r.result == Verdict::Flag {
                    let found: Vec<&str> = r.found.iter().map(AsRef::as_ref).collect();
                    flags.get_or_insert_with(Vec::new).push((
                        name.clone_ref(py),
                        phase.clone_ref(py),
                        found.join(", "),
                    ));
                }
                let categories = r.categories().into_iter().map(str::to_owned).collect();
                let result = result_name(py, r.result);
                (name, phase, result, r.start_ns, r.end_ns, categories)
            })
            .collect();
        let blocked = out.blocked().map(|r| {
            let categories = r.categories().into_iter().map(str::to_owned).collect();
            (r.guardrail, categories)
        });
        (out.changed, runs, flags, blocked)
    }

    /// The output guardrails of one stream, run by its meter ([`crate::meter`]).
    pub(crate) fn output_guard(
        &self,
        mutate: Vec<u32>,
        validate: Vec<u32>,
    ) -> PyResult<tollway_core::sse::OutputGuard> {
        let validate = self.ids(validate)?;
        Ok(tollway_core::sse::OutputGuard::new(
            Arc::clone(&self.inner),
            self.ids(mutate)?,
            &validate,
        ))
    }

    fn ids(&self, ids: Vec<u32>) -> PyResult<Vec<GuardrailId>> {
        match ids.iter().find(|&&id| self.inner.get(id).is_none()) {
            Some(bad) => Err(invalid(format!("no guardrail with id {bad}"))),
            None => Ok(ids),
        }
    }
}

#[pymethods]
impl Guardrails {
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

    fn info(&self, py: Python<'_>, id: u32) -> PyResult<GuardrailInfo> {
        let gr = self
            .inner
            .get(id)
            .ok_or_else(|| invalid("no such guardrail id"))?;
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
            name: PyString::new(py, &gr.name).unbind(),
            kind: PyString::intern(py, gr.kind).unbind(),
            operation: PyString::intern(py, gr.operation.name()).unbind(),
            enforcing_strategy: PyString::intern(py, gr.strategy.name()).unbind(),
            url,
            timeout_ms,
            headers,
            threshold,
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

    /// The built-in input guardrails `ids`, in order, over the texts of the decoded request
    /// `req` ([`RequestTexts`]), with the metadata verdicts of `adm` (see
    /// `GuardrailSet::run_input`). Redactions are written into `req`; the first item says
    /// whether any text changed.
    fn run_input<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<u32>,
        req: &Bound<'py, PyDict>,
        adm: PyRef<'_, Admission>,
    ) -> PyResult<InputOut> {
        let ids = self.ids(ids)?;
        let found = RequestTexts::of(req)?;
        let texts: Vec<Option<&str>> = found.texts.iter().map(|t| Some(&**t)).collect();
        let violations = &adm.inner.metadata_violations;
        let flagged = |id| violations.iter().any(|(v, _)| *v == id);
        let out = self.inner.run_input(&ids, &texts, &flagged, &CLOCK);
        let (changed, runs, flags, blocked) = self.phase_out(py, out);
        let mutated = !changed.is_empty();
        found.write(changed)?;
        Ok((mutated, runs, flags, blocked))
    }

    /// A non-streamed answer's texts (`None`: not text) through the output guardrails: the
    /// `validate` ones, then the `mutate` ones (see `GuardrailSet::run_output`).
    fn run_output(
        &self,
        py: Python<'_>,
        validate: Vec<u32>,
        mutate: Vec<u32>,
        texts: Vec<Option<PyBackedStr>>,
    ) -> PyResult<PhaseOut> {
        let (validate, mutate) = (self.ids(validate)?, self.ids(mutate)?);
        let texts: Vec<Option<&str>> = texts.iter().map(|t| t.as_deref()).collect();
        let out = self.inner.run_output(&validate, &mutate, &texts, &CLOCK);
        Ok(self.phase_out(py, out))
    }

    fn stream_redactor(&self, ids: Vec<u32>) -> PyResult<StreamRedactor> {
        let ids = self.ids(ids)?;
        Ok(StreamRedactor {
            inner: self.inner.stream_redactor(&ids),
        })
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

/// The verdict (`pass`, `flag`, `block`, `error`) of an `enforcing_strategy` on an outcome
/// (`pass`, `flag`, `error`): the core's one table, for webhooks and MCP tool checks.
#[pyfunction]
fn guardrail_verdict(strategy: &str, outcome: &str) -> PyResult<&'static str> {
    let strategy = Strategy::parse(strategy)
        .ok_or_else(|| invalid(format!("'{strategy}' is not an enforcing strategy")))?;
    let outcome = Outcome::parse(outcome)
        .ok_or_else(|| invalid(format!("'{outcome}' is not a guardrail outcome")))?;
    Ok(strategy.decide(outcome).name())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(guardrail_verdict, m)?)?;
    m.add_class::<Guardrails>()?;
    m.add_class::<GuardrailInfo>()?;
    m.add_class::<Check>()?;
    m.add_class::<Finding>()?;
    m.add_class::<StreamRedactor>()?;
    Ok(())
}
