//! Python face of the stream meter and the token counters: conversions only.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::guardrails::Guardrails;
use crate::scrub::RequestScrubber;
use std::sync::Arc;
use tollway_core::clock::Clock;
use tollway_core::sse::{MeterOptions, StreamFormat};
use tollway_core::tokens;

/// Milliseconds on the engine's monotonic clock (its origin is the first call in the process).
fn clock_ms() -> f64 {
    Clock::System.now_ms_f64()
}

/// The meter's clock, for a `started_ms` taken before the meter exists (at request start).
#[pyfunction]
fn monotonic_ms() -> f64 {
    clock_ms()
}

/// Tokens in `text` with the tokenizer of `model` (o200k for non-OpenAI families: an estimate).
#[pyfunction]
fn count_tokens(text: &str, model: &str) -> u64 {
    tokens::count_tokens(text, model)
}

/// Estimated prompt tokens of a chat request body (JSON bytes) or a `messages` array.
#[pyfunction]
fn count_prompt_tokens(body: &[u8], model: &str) -> u64 {
    tokens::count_prompt_tokens(body, model)
}

/// Loads the tokenizer of `model` now (tens of ms), so no request pays for it.
#[pyfunction]
fn warm_tokenizer(py: Python<'_>, model: &str) {
    // Hundreds of ms: release the GIL so a worker thread can do it beside the event loop.
    py.detach(|| tokens::warm(model));
}

/// Meters one streamed response and returns the bytes for the client; see tollway-core's
/// `sse::meter`. One meter belongs to one request.
#[pyclass(module = "tollway._core")]
struct SseMeter {
    inner: tollway_core::sse::SseMeter,
}

#[pymethods]
impl SseMeter {
    #[new]
    #[pyo3(signature = (format, model, started_ms=None, strip_usage=false, include_usage=true))]
    fn new(
        format: &str,
        model: &str,
        started_ms: Option<f64>,
        strip_usage: bool,
        include_usage: bool,
    ) -> PyResult<Self> {
        let format = StreamFormat::parse(format).ok_or_else(|| {
            crate::errors::invalid(format!(
                "format must be 'openai', 'anthropic', 'anthropic-raw', \
                 'openai-to-anthropic', 'responses', 'gemini', 'bedrock', \
                 'gemini-to-anthropic' or 'bedrock-to-anthropic', not {format:?}"
            ))
        })?;
        let created = Clock::System.wall_ms() / 1000;
        Ok(Self {
            inner: tollway_core::sse::SseMeter::new(MeterOptions {
                format,
                model: model.to_owned(),
                started_ms: started_ms.unwrap_or_else(clock_ms),
                strip_usage,
                include_usage,
                created,
            }),
        })
    }

    /// Runs output guardrails (ids of `guardrails`: pii/secrets/regex redaction in `mutate`,
    /// text validators in `validate`) on what `feed` and `finish` return, in the same pass.
    fn guard_output(
        &mut self,
        guardrails: PyRef<'_, Guardrails>,
        mutate: Vec<u32>,
        validate: Vec<u32>,
    ) -> PyResult<()> {
        self.inner
            .guard_output(guardrails.output_guard(mutate, validate)?);
        Ok(())
    }

    /// Removes the request's secrets (`Scrubber.for_request`) from what `feed` and `finish`
    /// return, after the output guardrails.
    fn scrub_output(&mut self, scrubber: PyRef<'_, RequestScrubber>) {
        self.inner.scrub_output(Arc::clone(&scrubber.inner));
    }

    /// `(guardrail id, categories found)` of the validator that stopped the stream, if one did.
    #[getter]
    fn blocked(&self) -> Option<(u32, Vec<String>)> {
        let b = self.inner.output_guard()?.blocked()?;
        Some((b.guardrail, b.categories.clone()))
    }

    /// Categories the output guardrails redacted in the texts that ended, sorted, each once.
    #[getter]
    fn redacted(&self) -> Vec<String> {
        let Some(g) = self.inner.output_guard() else {
            return Vec::new();
        };
        let mut cats: Vec<String> = g.redacted().iter().map(ToString::to_string).collect();
        cats.sort_unstable();
        cats.dedup();
        cats
    }

    /// Nothing more goes to the client: the stream broke (`error`) or was `blocked`.
    #[getter]
    fn halted(&self) -> bool {
        self.inner.halted()
    }

    /// Takes one upstream chunk; returns the bytes to send to the client now (maybe empty).
    #[pyo3(signature = (chunk, now_ms=None))]
    fn feed<'py>(
        &mut self,
        py: Python<'py>,
        chunk: &[u8],
        now_ms: Option<f64>,
    ) -> Bound<'py, PyBytes> {
        let now = now_ms.unwrap_or_else(clock_ms);
        PyBytes::new(py, self.inner.feed(chunk, now))
    }

    /// Ends the stream; returns any last bytes for the client. Never adds a `[DONE]`.
    #[pyo3(signature = (now_ms=None))]
    fn finish<'py>(&mut self, py: Python<'py>, now_ms: Option<f64>) -> Bound<'py, PyBytes> {
        let now = now_ms.unwrap_or_else(clock_ms);
        PyBytes::new(py, self.inner.finish(now))
    }

    #[getter]
    fn format(&self) -> &'static str {
        self.inner.format().name()
    }

    #[getter]
    fn ttft_ms(&self) -> Option<f64> {
        self.inner.ttft_ms()
    }

    #[getter]
    fn itl_mean_ms(&self) -> Option<f64> {
        self.inner.itl_mean_ms()
    }

    #[getter]
    fn itl_max_ms(&self) -> Option<f64> {
        self.inner.itl_max_ms()
    }

    /// The provider's count, else counted from the text seen (tokenizes: read once).
    #[getter]
    fn output_tokens(&self) -> u64 {
        self.inner.output_tokens()
    }

    #[getter]
    fn prompt_tokens(&self) -> Option<u64> {
        self.inner.prompt_tokens()
    }

    #[getter]
    fn cached_tokens(&self) -> Option<u64> {
        self.inner.usage().cached_tokens
    }

    /// Prompt tokens written to the provider's cache (Anthropic), part of `prompt_tokens`.
    #[getter]
    fn cache_creation_tokens(&self) -> Option<u64> {
        self.inner.usage().cache_creation_tokens
    }

    #[getter]
    fn usage_estimated(&self) -> bool {
        self.inner.usage_estimated()
    }

    #[getter]
    fn finish_reason(&self) -> Option<&str> {
        self.inner.finish_reason()
    }

    #[getter]
    fn done(&self) -> bool {
        self.inner.done()
    }

    /// Why the stream is broken, in words fit for the client; `None` while it is fine.
    #[getter]
    fn error(&self) -> Option<String> {
        self.inner.error().map(ToString::to_string)
    }

    /// A stable code for `error` (`upstream_stream_error`, `upstream_stream_truncated`, ...).
    #[getter]
    fn error_code(&self) -> Option<&'static str> {
        self.inner.error().map(|e| e.code())
    }

    #[getter]
    fn response_id(&self) -> Option<&str> {
        self.inner.response_id()
    }

    /// The answer's text as streamed (content, refusal, tool calls), at most `limit` bytes
    /// cut at a character boundary; for traces that keep request data.
    fn text(&self, limit: usize) -> &str {
        let t = self.inner.text();
        let mut end = t.len().min(limit);
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        &t[..end]
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SseMeter>()?;
    m.add_function(wrap_pyfunction!(monotonic_ms, m)?)?;
    m.add_function(wrap_pyfunction!(count_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(count_prompt_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(warm_tokenizer, m)?)?;
    Ok(())
}
