//! Python face of the secret scrubber (tollway-core `scrub`): conversions only.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use std::sync::Arc;
use tollway_core::engine::bearer_token;
use tollway_core::scrub::RequestScrub;

/// Removes every configured secret from bytes relayed to a client; one per config.
#[pyclass(frozen, module = "tollway._core")]
pub(crate) struct Scrubber {
    inner: Arc<tollway_core::scrub::Scrubber>,
}

/// One request's scrubbing: the config's secrets and the request's own key, whose searcher is
/// built once; the same object scrubs a whole answer and is handed to a stream's meter.
#[pyclass(frozen, module = "tollway._core")]
pub(crate) struct RequestScrubber {
    pub(crate) inner: Arc<RequestScrub>,
}

#[pymethods]
impl RequestScrubber {
    /// `data` without secrets (the same object when it had none).
    fn scrub<'py>(&self, data: Bound<'py, PyBytes>) -> Bound<'py, PyBytes> {
        match self.inner.scrub(data.as_bytes()) {
            Some(clean) => PyBytes::new(data.py(), &clean),
            None => data,
        }
    }
}

#[pymethods]
impl Scrubber {
    #[new]
    fn new(secrets: Vec<String>) -> Self {
        Self {
            inner: Arc::new(tollway_core::scrub::Scrubber::new(secrets)),
        }
    }

    /// This scrubber with one request's own key added: the key of its `Authorization` header,
    /// read as admission reads it.
    #[pyo3(signature = (authorization=None))]
    fn for_request(&self, authorization: Option<&[u8]>) -> RequestScrubber {
        let key = authorization
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(bearer_token);
        RequestScrubber {
            inner: Arc::new(RequestScrub::new(
                Arc::clone(&self.inner),
                key.map(str::as_bytes),
            )),
        }
    }

    /// `data` without secrets (the same object when it had none); `extra` is one more
    /// secret for this call only, e.g. the request's client key.
    #[pyo3(signature = (data, extra=None))]
    fn scrub<'py>(&self, data: Bound<'py, PyBytes>, extra: Option<&[u8]>) -> Bound<'py, PyBytes> {
        match self.inner.scrub(data.as_bytes(), extra) {
            Some(clean) => PyBytes::new(data.py(), &clean),
            None => data,
        }
    }

    /// The same for text (an error message, a header value).
    #[pyo3(signature = (text, extra=None))]
    fn scrub_text<'py>(
        &self,
        text: Bound<'py, PyString>,
        extra: Option<&[u8]>,
    ) -> PyResult<Bound<'py, PyString>> {
        let clean = self.inner.scrub(text.to_str()?.as_bytes(), extra);
        Ok(match clean {
            Some(clean) => PyString::new(text.py(), &String::from_utf8_lossy(&clean)),
            None => text,
        })
    }

    /// False when no secret is configured (only a per-call `extra` can then be scrubbed).
    fn __bool__(&self) -> bool {
        !self.inner.is_empty()
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Scrubber>()?;
    m.add_class::<RequestScrubber>()
}
