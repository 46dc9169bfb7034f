//! Python face of the OTLP batch encoder: a JSON batch of records in, an export body out.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tollway_core::telemetry::otlp::{decode_batch, Encoding, SpanEncoder as CoreEncoder};

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
        let encoding = match encoding {
            "proto" => Encoding::Protobuf,
            "json" => Encoding::Json,
            _ => return Err(crate::errors::invalid("encoding must be 'proto' or 'json'")),
        };
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

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SpanEncoder>()
}
