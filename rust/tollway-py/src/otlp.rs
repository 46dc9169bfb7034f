//! Python face of the telemetry batch: a MessagePack batch of records decoded once, folded into the
//! metrics and the access log, queued, and encoded as OTLP export bodies.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use std::collections::HashMap;
use tollway_core::telemetry::fold::RecordFold as CoreFold;
use tollway_core::telemetry::metrics_otlp::{self, MetricsEncoder as CoreMetricsEncoder};
use tollway_core::telemetry::otlp::{Encoding, SpanEncoder as CoreEncoder};
use tollway_core::telemetry::queue::{span_count, SpanQueue};
use tollway_core::telemetry::record::{decode_batch, Record};

fn encoding_of(name: &str) -> PyResult<Encoding> {
    match name {
        "proto" => Ok(Encoding::Protobuf),
        "json" => Ok(Encoding::Json),
        _ => Err(crate::errors::invalid("encoding must be 'proto' or 'json'")),
    }
}

/// One intake slice of records: taken from the request path's `RecordBuffer`, or decoded
/// once from a MessagePack array of `Record`s; folded into the metrics, then moved into the
/// export queue.
#[pyclass(module = "tollway._core")]
pub(crate) struct RecordBatch {
    pub(crate) records: Vec<Record>,
    /// The records as one MessagePack array, when `RecordBuffer.take` was asked for it (for
    /// the request log and alerts).
    pub(crate) encoded: Option<Vec<u8>>,
}

#[pymethods]
impl RecordBatch {
    #[new]
    fn new(batch: &[u8]) -> PyResult<Self> {
        let records = decode_batch(batch)
            .map_err(|e| crate::errors::invalid(format!("bad telemetry batch: {e}")))?;
        // The caller has the bytes: no copy is kept.
        Ok(Self {
            records,
            encoded: None,
        })
    }

    fn __len__(&self) -> usize {
        self.records.len()
    }

    /// The records as one MessagePack array of `Record`, if taken with `encoded`.
    fn encoded<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.encoded.as_deref().map(|b| PyBytes::new(py, b))
    }

    /// How many of the records may go in the request log (their `LogPart.enabled`).
    fn logged(&self) -> usize {
        self.records
            .iter()
            .filter(|r| r.log.as_ref().is_some_and(|l| l.enabled))
            .count()
    }
}

/// What a batch adds to the metrics (tollway.telemetry.metrics) and the access log.
#[pyclass(module = "tollway._core")]
struct RecordFold {
    inner: CoreFold,
}

type Series<'py, T> = Vec<(&'static str, Bound<'py, PyTuple>, T)>;

#[pymethods]
impl RecordFold {
    #[new]
    fn new(
        metadata_keys: Vec<String>,
        value_cap: usize,
        buckets: HashMap<String, Vec<f64>>,
    ) -> Self {
        Self {
            inner: CoreFold::new(metadata_keys, value_cap, buckets.into_iter().collect()),
        }
    }

    /// `(counters, observations, access_log, guardrail_health)`: counters as
    /// `(family, labels, amount)` summed over the batch, histograms as `(family, labels,
    /// row)` (a count per bucket, then `+Inf`, then the sum, over the batch), the access-log
    /// lines (`""` unless `access_log`), and the guardrail runs that changed a guardrail's
    /// state as `(name, failed)`.
    #[allow(clippy::type_complexity)]
    fn fold<'py>(
        &mut self,
        py: Python<'py>,
        batch: &RecordBatch,
        access_log: bool,
    ) -> PyResult<(
        Series<'py, f64>,
        Series<'py, Vec<f64>>,
        String,
        Vec<(String, bool)>,
    )> {
        let f = self.inner.fold(&batch.records, access_log);
        let counters = f
            .counters
            .into_iter()
            .map(|(n, l, x)| Ok((n, PyTuple::new(py, l)?, x)))
            .collect::<PyResult<_>>()?;
        let observations = f
            .observations
            .into_iter()
            .map(|(n, l, x)| Ok((n, PyTuple::new(py, l)?, x)))
            .collect::<PyResult<_>>()?;
        Ok((counters, observations, f.access_log, f.guardrail_health))
    }
}

/// The span export queue and encoder, built once per exporter from the resolved settings.
#[pyclass(module = "tollway._core")]
struct SpanEncoder {
    inner: CoreEncoder,
    encoding: Encoding,
    queue: SpanQueue,
}

#[pymethods]
impl SpanEncoder {
    #[new]
    fn new(
        service_name: &str,
        resource_attributes: Vec<(String, String)>,
        exclude_request_data: bool,
        encoding: &str,
        queue_size: usize,
    ) -> PyResult<Self> {
        let encoding = encoding_of(encoding)?;
        Ok(Self {
            inner: CoreEncoder::new(service_name, &resource_attributes, exclude_request_data),
            encoding,
            queue: SpanQueue::new(queue_size),
        })
    }

    /// Moves the batch's records into the queue (the batch is empty after); returns the
    /// spans dropped because the queue was full.
    fn push(&mut self, mut batch: PyRefMut<'_, RecordBatch>) -> usize {
        self.queue.push(std::mem::take(&mut batch.records))
    }

    /// `(body, spans, dropped_if_lost)` of the next `max_records` queued records, or None
    /// when empty: `spans` is what the body holds, `dropped_if_lost` what a failed export of
    /// it counts as dropped (as `push` counts them).
    fn encode_next<'py>(
        &mut self,
        py: Python<'py>,
        max_records: usize,
    ) -> Option<(Bound<'py, PyBytes>, usize, usize)> {
        let records = self.queue.take(max_records);
        if records.is_empty() {
            return None;
        }
        let lost = records.iter().map(span_count).sum();
        let (body, n) = self.inner.encode(&records, self.encoding);
        Some((PyBytes::new(py, &body), n, lost))
    }

    /// Empties the queue; returns the spans dropped.
    fn clear(&mut self) -> usize {
        self.queue.clear()
    }

    fn __len__(&self) -> usize {
        self.queue.len()
    }
}

/// The OTLP metrics encoder: `encode` once per export interval.
#[pyclass(frozen, module = "tollway._core")]
struct MetricsEncoder {
    inner: CoreMetricsEncoder,
    encoding: Encoding,
}

#[pymethods]
impl MetricsEncoder {
    #[new]
    #[pyo3(signature = (service_name, resource_attributes, encoding = "proto"))]
    fn new(
        service_name: &str,
        resource_attributes: Vec<(String, String)>,
        encoding: &str,
    ) -> PyResult<Self> {
        Ok(Self {
            inner: CoreMetricsEncoder::new(service_name, &resource_attributes),
            encoding: encoding_of(encoding)?,
        })
    }

    /// The export body for a msgspec-encoded `(start_ns, now_ns, list[Family])`.
    fn encode<'py>(&self, py: Python<'py>, batch_json: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let batch = metrics_otlp::decode_batch(batch_json)
            .map_err(|e| crate::errors::invalid(format!("bad metrics batch: {e}")))?;
        Ok(PyBytes::new(py, &self.inner.encode(&batch, self.encoding)))
    }
}

/// The default of every telemetry setting (the core's `telemetry::config::DEFAULTS`), for
/// the `OTEL_*` environment overlay: the config file wins, then the environment, then these.
#[pyclass(frozen, get_all, module = "tollway._core")]
struct TelemetryDefaults {
    service_name: &'static str,
    encoding: &'static str,
    exclude_request_data: bool,
    batch_size: u64,
    queue_size: u64,
    export_timeout_ms: u64,
    schedule_delay_ms: u64,
    metrics_export_interval_ms: u64,
    metadata_value_cap: u64,
}

#[pyfunction]
fn telemetry_defaults() -> TelemetryDefaults {
    let d = tollway_core::telemetry::config::DEFAULTS;
    TelemetryDefaults {
        service_name: d.service_name,
        encoding: d.encoding.name(),
        exclude_request_data: d.exclude_request_data,
        batch_size: d.batch_size,
        queue_size: d.queue_size,
        export_timeout_ms: d.export_timeout_ms,
        schedule_delay_ms: d.schedule_delay_ms,
        metrics_export_interval_ms: d.metrics_export_interval_ms,
        metadata_value_cap: d.metadata_value_cap,
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TelemetryDefaults>()?;
    m.add_function(wrap_pyfunction!(telemetry_defaults, m)?)?;
    m.add_class::<RecordBatch>()?;
    m.add_class::<RecordFold>()?;
    m.add_class::<SpanEncoder>()?;
    m.add_class::<MetricsEncoder>()
}
