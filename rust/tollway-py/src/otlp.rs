//! Python face of the OTLP batch encoder: a JSON batch of records in, an export body out.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tollway_core::telemetry::metrics_otlp::{self, MetricsEncoder as CoreMetricsEncoder};
use tollway_core::telemetry::otlp::{decode_batch, Encoding, SpanEncoder as CoreEncoder};

fn encoding_of(name: &str) -> PyResult<Encoding> {
    match name {
        "proto" => Ok(Encoding::Protobuf),
        "json" => Ok(Encoding::Json),
        _ => Err(crate::errors::invalid("encoding must be 'proto' or 'json'")),
    }
}

/// Built once per exporter from the resolved settings; `encode` is called once per batch.
#[pyclass(frozen, module = "tollway._core")]
struct SpanEncoder {
    inner: CoreEncoder,
    encoding: Encoding,
}

#[pymethods]
impl SpanEncoder {
    #[new]
    #[pyo3(signature = (service_name, resource_attributes, exclude_request_data, encoding = "proto"))]
    fn new(
        service_name: &str,
        resource_attributes: Vec<(String, String)>,
        exclude_request_data: bool,
        encoding: &str,
    ) -> PyResult<Self> {
        let encoding = encoding_of(encoding)?;
        Ok(Self {
            inner: CoreEncoder::new(service_name, &resource_attributes, exclude_request_data),
            encoding,
        })
    }

    /// `(body, span_count)` for a msgspec-encoded `list[Record]`.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        batch_json: &[u8],
    ) -> PyResult<(Bound<'py, PyBytes>, usize)> {
        let records = decode_batch(batch_json)
            .map_err(|e| crate::errors::invalid(format!("bad telemetry batch: {e}")))?;
        let (body, n) = self.inner.encode(&records, self.encoding);
        Ok((PyBytes::new(py, &body), n))
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
    m.add_class::<SpanEncoder>()?;
    m.add_class::<MetricsEncoder>()
}
