//! Python face of the request record: reads the request's `RequestLog` (tollway.telemetry.
//! observe) and body parameters into the core's [`RequestFacts`], and keeps the record the core
//! composes in a [`RecordBuffer`] until telemetry intake takes it (as MessagePack too, when a
//! request log or alerts read the records).

use crate::admission::Admission;
use crate::engine::{Denial, Engine};
use crate::otlp::RecordBatch;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyString};
use std::collections::VecDeque;
use tollway_core::telemetry::record::{
    decode_batch, request_record as compose, AttemptFacts, Decision, GuardrailRun, LogFacts,
    Params, Record, RequestFacts,
};
use tollway_core::telemetry::wire::write_array;

/// A number the client sent (`int` or `float`, not `bool`), else None.
fn number(v: Option<Bound<'_, PyAny>>) -> Option<f64> {
    let v = v?;
    if v.is_exact_instance_of::<PyFloat>() || v.is_exact_instance_of::<PyInt>() {
        v.extract().ok()
    } else {
        None
    }
}

/// A whole number the client sent (`25`, or `25.0`), else None.
fn whole(v: Option<Bound<'_, PyAny>>) -> Option<i64> {
    let v = v?;
    if v.is_exact_instance_of::<PyInt>() {
        return v.extract().ok();
    }
    let f: f64 = if v.is_exact_instance_of::<PyFloat>() {
        v.extract().ok()?
    } else {
        return None;
    };
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

fn params(req: &Bound<'_, PyDict>, messages: Option<String>) -> PyResult<Params> {
    let py = req.py();
    let model = match req.get_item(intern!(py, "model"))? {
        Some(m) if m.is_exact_instance_of::<PyString>() => m.extract()?,
        _ => String::new(),
    };
    let stream = req
        .get_item(intern!(py, "stream"))?
        .is_some_and(|s| s.is(&*PyBool::new(py, true)));
    // `max_tokens: 0` (or absent) leaves `max_completion_tokens` to say it.
    let max_tokens = match whole(req.get_item(intern!(py, "max_tokens"))?).filter(|&n| n != 0) {
        Some(n) => Some(n),
        None => whole(req.get_item(intern!(py, "max_completion_tokens"))?),
    };
    Ok(Params {
        model,
        stream,
        temperature: number(req.get_item(intern!(py, "temperature"))?),
        top_p: number(req.get_item(intern!(py, "top_p"))?),
        max_tokens,
        messages,
    })
}

fn attempts(log: &Bound<'_, PyAny>) -> PyResult<Vec<AttemptFacts>> {
    let py = log.py();
    let mut out = Vec::new();
    for a in log.getattr(intern!(py, "attempts"))?.try_iter()? {
        let a = a?;
        out.push(AttemptFacts {
            target: a
                .getattr(intern!(py, "plan"))?
                .getattr(intern!(py, "target"))?
                .extract()?,
            start_s: a.getattr(intern!(py, "start_s"))?.extract()?,
            end_s: a.getattr(intern!(py, "end_s"))?.extract()?,
            status: a.getattr(intern!(py, "status"))?.extract()?,
            error_type: a.getattr(intern!(py, "error_type"))?.extract()?,
            fallback_reason: a.getattr(intern!(py, "fallback_reason"))?.extract()?,
        });
    }
    Ok(out)
}

fn guardrails(log: &Bound<'_, PyAny>) -> PyResult<Vec<GuardrailRun>> {
    let py = log.py();
    let mut out = Vec::new();
    for g in log.getattr(intern!(py, "guardrails"))?.try_iter()? {
        let g = g?;
        out.push(GuardrailRun {
            name: g.getattr(intern!(py, "name"))?.extract()?,
            phase: g.getattr(intern!(py, "phase"))?.extract()?,
            result: g.getattr(intern!(py, "result"))?.extract()?,
            start_ns: g.getattr(intern!(py, "start_ns"))?.extract()?,
            end_ns: g.getattr(intern!(py, "end_ns"))?.extract()?,
            categories: g.getattr(intern!(py, "categories"))?.extract()?,
        });
    }
    Ok(out)
}

/// The finished requests' records, from the request path to telemetry intake, in order. They
/// stay the core's values: written as MessagePack only at intake, and only for the request
/// log and alerts.
#[pyclass(module = "tollway._core")]
#[derive(Default)]
pub(crate) struct RecordBuffer {
    records: VecDeque<Record>,
}

#[pymethods]
impl RecordBuffer {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    fn __len__(&self) -> usize {
        self.records.len()
    }

    /// Composes and keeps one proxied request's record; returns how many are kept now (the
    /// caller wakes intake at a threshold without asking again). `log` is its
    /// `RequestLog`; `req` the request body once parsed; `adm` what `admit` returned;
    /// `messages` the request's messages as JSON when content is captured; `log_body_cap`
    /// None without a request log or alerts (no log part).
    #[pyo3(signature = (engine, log, request_id, duration_s, req, adm, traceparent, messages, capture_content, tracing, log_body_cap))]
    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        engine: PyRef<'_, Engine>,
        log: &Bound<'_, PyAny>,
        request_id: &[u8],
        duration_s: f64,
        req: Option<&Bound<'_, PyDict>>,
        adm: Option<&Bound<'_, PyAny>>,
        traceparent: Option<&[u8]>,
        messages: Option<String>,
        capture_content: bool,
        tracing: bool,
        log_body_cap: Option<usize>,
    ) -> PyResult<usize> {
        let py = log.py();
        // Header values as Python's `decode("ascii", "replace")` reads them.
        let text = |b: &[u8]| -> String {
            b.iter()
                .map(|&c| {
                    if c.is_ascii() {
                        char::from(c)
                    } else {
                        '\u{fffd}'
                    }
                })
                .collect()
        };
        let usage: (i64, i64, i64, i64) = log.getattr(intern!(py, "usage"))?.extract()?;
        let request_body = log.getattr(intern!(py, "request_body"))?;
        let logging_config = log.getattr(intern!(py, "logging_config"))?;
        let facts = RequestFacts {
            request_id: text(request_id),
            start_ns: log.getattr(intern!(py, "start_ns"))?.extract()?,
            duration_ns: (duration_s.max(0.0) * 1e9) as u64,
            route: log.getattr(intern!(py, "route"))?.extract()?,
            status: log.getattr(intern!(py, "status"))?.extract()?,
            error_type: log.getattr(intern!(py, "error_type"))?.extract()?,
            traceparent: traceparent.map(text).unwrap_or_default(),
            params: req.map(|r| params(r, messages)).transpose()?,
            attempts: attempts(log)?,
            response_id: log.getattr(intern!(py, "response_id"))?.extract()?,
            response_model: log.getattr(intern!(py, "response_model"))?.extract()?,
            finish_reasons: log.getattr(intern!(py, "finish_reasons"))?.extract()?,
            usage: [usage.0, usage.1, usage.2, usage.3],
            usage_estimated: log.getattr(intern!(py, "usage_estimated"))?.extract()?,
            cost_usd: log.getattr(intern!(py, "cost_usd"))?.extract()?,
            ttft_ms: log.getattr(intern!(py, "ttft_ms"))?.extract()?,
            itl_mean_ms: log.getattr(intern!(py, "itl_mean_ms"))?.extract()?,
            itl_max_ms: log.getattr(intern!(py, "itl_max_ms"))?.extract()?,
            output_text: log.getattr(intern!(py, "output_text"))?.extract()?,
            guardrails: guardrails(log)?,
            capture_content,
            tracing,
            log: match log_body_cap {
                None => None,
                Some(body_cap) => Some(LogFacts {
                    body_cap,
                    request_body: request_body.cast::<PyBytes>()?.as_bytes(),
                    logging_config: if logging_config.is_none() {
                        None
                    } else {
                        Some(logging_config.cast::<PyBytes>()?.as_bytes())
                    },
                }),
            },
        };
        let decision = match adm {
            None => Decision::None,
            Some(a) => match a.cast::<Admission>() {
                Ok(admitted) => Decision::Admitted(&admitted.get().inner),
                Err(_) => {
                    let d = a.cast::<Denial>()?.get();
                    Decision::Denied {
                        key: d.key,
                        code: d.code,
                        rule_id: d.rule_id.as_deref(),
                    }
                }
            },
        };
        self.records
            .push_back(compose(&engine.inner, facts, decision));
        Ok(self.records.len())
    }

    /// Keeps a record made in Python (MCP requests), written as MessagePack by msgspec;
    /// returns how many are kept now.
    fn push_encoded(&mut self, data: &[u8]) -> PyResult<usize> {
        let mut one = Vec::with_capacity(data.len() + 1);
        one.push(0x91); // an array of one
        one.extend_from_slice(data);
        let record = decode_batch(&one)
            .ok()
            .and_then(|mut r| r.pop())
            .ok_or_else(|| crate::errors::invalid("not a telemetry record"))?;
        self.records.push_back(record);
        Ok(self.records.len())
    }

    /// The `n` oldest records (fewer if there are not as many), as one batch; `encoded`: also
    /// as one MessagePack array (`RecordBatch.encoded`), for the request log and alerts.
    fn take(&mut self, n: usize, encoded: bool) -> RecordBatch {
        let n = n.min(self.records.len());
        let records: Vec<Record> = self.records.drain(..n).collect();
        let encoded = encoded.then(|| write_array(&records));
        RecordBatch { records, encoded }
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RecordBuffer>()
}
