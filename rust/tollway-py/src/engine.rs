//! Python classes over the compiled engine: `Engine` (admit, settle, authenticate) and the
//! frozen values it returns.

use crate::admission::Admission;
use crate::errors::{config_error, invalid};
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::sync::Arc;
use tollway_core::clock::Clock;
use tollway_core::engine;
use tollway_core::routing;

#[pyclass(frozen, module = "tollway._core")]
pub(crate) struct Settings {
    #[pyo3(get)]
    host: String,
    #[pyo3(get)]
    port: u16,
    #[pyo3(get)]
    workers: u32,
    #[pyo3(get)]
    max_body_bytes: u64,
    #[pyo3(get)]
    connect_timeout_ms: u64,
    #[pyo3(get)]
    request_timeout_ms: u64,
    #[pyo3(get)]
    max_request_timeout_ms: u64,
    #[pyo3(get)]
    drain_delay_s: u64,
    #[pyo3(get)]
    shutdown_grace_s: u64,
    #[pyo3(get)]
    http: String,
    #[pyo3(get)]
    backpressure: Option<u64>,
    #[pyo3(get)]
    keep_alive: bool,
    #[pyo3(get)]
    max_response_bytes: u64,
    #[pyo3(get)]
    max_header_bytes: u64,
    #[pyo3(get)]
    body_read_timeout_ms: u64,
    /// `{"otel": {...}, "metrics": {...}}`: the validated telemetry sections.
    #[pyo3(get)]
    telemetry_json: String,
    #[pyo3(get)]
    state_backend: String,
    #[pyo3(get)]
    redis_url: Option<String>,
    #[pyo3(get)]
    sync_interval_ms: u64,
    #[pyo3(get)]
    redis_timeout_ms: u64,
}

#[pyclass(frozen, module = "tollway._core")]
pub(crate) struct Target {
    #[pyo3(get)]
    name: String,
    #[pyo3(get)]
    account: String,
    #[pyo3(get)]
    provider: &'static str,
    #[pyo3(get)]
    base_url: String,
    #[pyo3(get)]
    api_key: Option<String>,
    #[pyo3(get)]
    api_version: Option<String>,
    #[pyo3(get)]
    headers: Vec<(String, String)>,
    #[pyo3(get)]
    model_id: String,
    #[pyo3(get)]
    region: Option<String>,
    #[pyo3(get)]
    project: Option<String>,
    #[pyo3(get)]
    service_account_json: Option<String>,
    #[pyo3(get)]
    service_account_file: Option<String>,
    #[pyo3(get)]
    aws_access_key_id: Option<String>,
    #[pyo3(get)]
    aws_secret_access_key: Option<String>,
    #[pyo3(get)]
    aws_session_token: Option<String>,
    #[pyo3(get)]
    aws_profile: Option<String>,
}

#[pyclass(frozen, module = "tollway._core")]
pub(crate) struct Key {
    #[pyo3(get)]
    name: String,
    #[pyo3(get)]
    subject: String,
    #[pyo3(get)]
    admin: bool,
}

/// A refused request: HTTP status and the fields of an OpenAI error body.
#[pyclass(frozen, module = "tollway._core")]
pub(crate) struct Denial {
    #[pyo3(get)]
    status: u16,
    #[pyo3(get)]
    error_type: &'static str,
    #[pyo3(get)]
    pub(crate) code: &'static str,
    #[pyo3(get)]
    param: Option<&'static str>,
    #[pyo3(get)]
    message: String,
    #[pyo3(get)]
    headers: Vec<(&'static str, String)>,
    #[pyo3(get)]
    pub(crate) rule_id: Option<String>,
    #[pyo3(get)]
    pub(crate) key: Option<u32>,
}

impl From<engine::Denial> for Denial {
    fn from(d: engine::Denial) -> Self {
        Self {
            status: d.status,
            error_type: d.error_type,
            code: d.code,
            param: d.param,
            message: d.message,
            headers: d.headers,
            rule_id: d.rule_id,
            key: d.key,
        }
    }
}

/// How an attempt ended without an HTTP status: `int(Outcome.TIMEOUT)` is what `settle`
/// takes in place of a status (the codes are the core's `routing::Outcome`).
#[pyclass(eq, eq_int, frozen, module = "tollway._core")]
#[derive(Clone, Copy, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub(crate) enum Outcome {
    CONNECT = routing::Outcome::Connect as isize,
    TIMEOUT = routing::Outcome::Timeout as isize,
    BROKEN = routing::Outcome::Broken as isize,
    CANCELLED = routing::Outcome::Cancelled as isize,
}

impl Outcome {
    fn core(self) -> routing::Outcome {
        match self {
            Self::CONNECT => routing::Outcome::Connect,
            Self::TIMEOUT => routing::Outcome::Timeout,
            Self::BROKEN => routing::Outcome::Broken,
            Self::CANCELLED => routing::Outcome::Cancelled,
        }
    }
}

#[pymethods]
impl Outcome {
    /// The `error.type` telemetry records for an attempt that ended this way.
    #[getter]
    fn error_type(&self) -> &'static str {
        self.core().error_type()
    }
}

/// One way to call a target: a routing rule's slot, or a direct request for the target.
#[pyclass(frozen, module = "tollway._core")]
pub(crate) struct Plan {
    #[pyo3(get)]
    target: u32,
    #[pyo3(get)]
    rule: Option<u32>,
    #[pyo3(get)]
    retry_attempts: u32,
    #[pyo3(get)]
    retry_delay_ms: u64,
    #[pyo3(get)]
    retry_status_codes: Vec<u16>,
    #[pyo3(get)]
    fallback_status_codes: Vec<u16>,
    #[pyo3(get)]
    fallback_candidate: bool,
    #[pyo3(get)]
    override_params: Option<String>,
}

/// The compiled, immutable config. Reload builds a new one.
#[pyclass(frozen, module = "tollway._core")]
pub(crate) struct Engine {
    pub(crate) inner: engine::Engine,
}

fn spend_rows(
    rows: Vec<tollway_core::limits::budget::BudgetSpend>,
) -> Vec<(String, String, f64, f64, bool)> {
    rows.into_iter()
        .map(|r| {
            let (rule, entity) = (r.rule.to_string(), r.entity.to_string());
            (rule, entity, r.spent_usd, r.limit_usd, r.audit)
        })
        .collect()
}

fn header_str(raw: Option<&[u8]>) -> Option<&str> {
    // A non-UTF-8 Authorization header is as good as a missing one: 401 follows.
    raw.and_then(|b| std::str::from_utf8(b).ok())
}

#[pymethods]
impl Engine {
    /// Compiles `[{"source": str, "doc": {...}}, ...]` given as JSON bytes.
    /// `manual_clock=True` gives a clock only `advance_clock` moves (for tests).
    #[new]
    /// `previous`: the engine being replaced; live state of unchanged targets carries over.
    #[pyo3(signature = (documents_json, manual_clock=false, previous=None))]
    fn new(
        py: Python<'_>,
        documents_json: &[u8],
        manual_clock: bool,
        previous: Option<PyRef<'_, Engine>>,
    ) -> PyResult<Self> {
        let clock = match (&previous, manual_clock) {
            (Some(prev), _) => Arc::clone(&prev.inner.clock),
            (None, true) => Arc::new(Clock::manual()),
            (None, false) => Arc::new(Clock::System),
        };
        let previous = previous.as_deref().map(|p| &p.inner);
        // Compiling (regexes, guardrail DFAs, price lookups) takes milliseconds: without the
        // GIL, a reload compiled in a worker thread never stalls the event loop.
        let compiled = py.detach(|| {
            let docs: serde_json::Value = serde_json::from_slice(documents_json)
                .map_err(|e| Ok(format!("documents are not valid JSON: {e}")))?;
            let mut inner = engine::Engine::compile_with_clock(&docs, clock).map_err(Err)?;
            if let Some(prev) = previous {
                inner.adopt_state(prev);
            }
            Ok(inner)
        });
        let inner = compiled.map_err(
            |e: Result<String, Vec<tollway_core::ConfigError>>| match e {
                Ok(message) => invalid(message),
                Err(errors) => config_error(&errors),
            },
        )?;
        Ok(Self { inner })
    }

    fn advance_clock(&self, ms: u64) {
        self.inner.clock.advance(ms);
    }

    /// `(rule, entity, spent_usd, limit_usd, audit)` of the entities each budget rule knows
    /// this period, largest spend first, at most `cap` per rule (for metrics).
    fn budget_spend(&self, cap: usize) -> Vec<(String, String, f64, f64, bool)> {
        let wall = self.inner.clock.wall_ms();
        spend_rows(self.inner.budgets.spend_view(wall, cap))
    }

    /// The same rows for entities whose spend reached the limit since the last call.
    fn budget_crossings(&self) -> Vec<(String, String, f64, f64, bool)> {
        spend_rows(self.inner.budgets.take_crossings())
    }

    /// Feeds back one request: its attempts `(target, status, latency_ms, output_tokens)`
    /// (status HTTP, or 0 connect error, 1 timeout, 2 broken, 499 cancelled) and the usage
    /// of the answer `(input, cached_input, output)`, with the prompt tokens written to the
    /// provider's cache apart (part of `input`). Returns the cost in USD.
    #[pyo3(signature = (admission, attempts, usage, cache_write_tokens=0))]
    fn settle(
        &self,
        admission: PyRef<'_, Admission>,
        attempts: Vec<(u32, u16, f64, u32)>,
        usage: (u64, u64, u64),
        cache_write_tokens: u64,
    ) -> f64 {
        let outcomes: Vec<engine::AttemptOutcome> = attempts
            .into_iter()
            .map(
                |(target, status, latency_ms, output_tokens)| engine::AttemptOutcome {
                    target,
                    status,
                    latency_ms,
                    output_tokens,
                },
            )
            .collect();
        let usage = tollway_core::engine::Usage {
            input_tokens: usage.0,
            cached_input_tokens: usage.1,
            cache_write_tokens,
            output_tokens: usage.2,
        };
        self.inner.settle(&admission.inner, &outcomes, usage)
    }

    /// The response-cache plan of an admitted request: `(key, ttl_s, rule_id)`, or `None`
    /// when it is not cached; a bad `x-tfy-cache-config` header raises `ValueError`.
    #[pyo3(signature = (admission, header, api, body))]
    fn cache_plan(
        &self,
        admission: PyRef<'_, Admission>,
        header: Option<&str>,
        api: &str,
        body: &[u8],
    ) -> PyResult<Option<(String, u64, Option<String>)>> {
        match self.inner.cache_plan(&admission.inner, header, api, body) {
            Ok(plan) => Ok(plan.map(|p| (p.key, p.ttl_s, p.rule_id))),
            Err(message) => Err(pyo3::exceptions::PyValueError::new_err(message)),
        }
    }

    /// How many `gateway-cache-config` rules there are (0: the cache is off unless a
    /// request asks with the header).
    #[getter]
    fn cache_rules(&self) -> usize {
        self.inner.cache_rules.len()
    }

    /// `gateway-settings.cache`: `(backend, redis_url, max_bytes, timeout_ms)`.
    #[getter]
    fn cache_settings(&self) -> (String, Option<String>, u64, u64) {
        let c = &self.inner.cache;
        (
            c.backend.clone(),
            c.redis_url.clone(),
            c.max_bytes,
            c.timeout_ms,
        )
    }

    /// Budgets are configured: `admit` wants the prompt's size to reserve their cost.
    #[getter]
    fn has_budgets(&self) -> bool {
        !self.inner.budgets.is_empty()
    }

    #[getter]
    fn plans(&self) -> Vec<Plan> {
        self.inner
            .plans
            .iter()
            .map(|p| Plan {
                target: p.target,
                rule: p.rule,
                retry_attempts: p.retry.attempts,
                retry_delay_ms: p.retry.delay_ms,
                retry_status_codes: p.retry.on_status_codes.clone(),
                fallback_status_codes: p.fallback_status_codes.clone(),
                fallback_candidate: p.fallback_candidate,
                override_params: p.override_params.clone(),
            })
            .collect()
    }

    /// Decides one request; returns an `Admission` or a `Denial` (never raises for bad input).
    /// `prompt_tokens` and `max_tokens` size the cost a budget reserves until settle.
    #[pyo3(signature = (authorization, model, metadata=None, guardrails=None, prompt_tokens=0, max_tokens=None))]
    // Python keyword arguments, each optional: one per fact of the request.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        py: Python<'_>,
        authorization: Option<&[u8]>,
        model: &str,
        metadata: Option<&[u8]>,
        guardrails: Option<&[u8]>,
        prompt_tokens: u64,
        max_tokens: Option<u64>,
    ) -> PyResult<Py<PyAny>> {
        let size = tollway_core::limits::RequestSize {
            prompt_tokens,
            max_tokens,
        };
        Ok(
            match self.inner.admit_sized(
                header_str(authorization),
                model,
                metadata,
                guardrails,
                size,
            ) {
                Ok(inner) => Py::new(py, Admission { inner })?.into_any(),
                Err(d) => Py::new(py, Denial::from(d))?.into_any(),
            },
        )
    }

    /// The key id for an Authorization header value, or a `Denial`.
    fn authenticate(&self, py: Python<'_>, authorization: Option<&[u8]>) -> PyResult<Py<PyAny>> {
        Ok(match self.inner.authenticate(header_str(authorization)) {
            Ok(id) => id.into_pyobject(py)?.into_any().unbind(),
            Err(d) => Py::new(py, Denial::from(d))?.into_any(),
        })
    }

    fn models_for<'py>(&self, py: Python<'py>, key: u32) -> PyResult<Bound<'py, PyList>> {
        if key as usize >= self.inner.keys.len() {
            return Err(invalid("no such key id"));
        }
        PyList::new(py, self.inner.models_for(key).collect::<Vec<_>>())
    }

    /// The compiled guardrails of this config (empty when none are configured).
    #[getter]
    fn guardrails(&self, py: Python<'_>) -> crate::guardrails::Guardrails {
        crate::guardrails::Guardrails::from_set(py, Arc::clone(&self.inner.guardrails))
    }

    #[getter]
    fn settings(&self) -> Settings {
        let s = &self.inner.settings;
        Settings {
            host: s.host.clone(),
            port: s.port,
            workers: s.workers,
            max_body_bytes: s.max_body_bytes,
            connect_timeout_ms: s.connect_timeout_ms,
            request_timeout_ms: s.request_timeout_ms,
            max_request_timeout_ms: s.max_request_timeout_ms,
            drain_delay_s: s.drain_delay_s,
            shutdown_grace_s: s.shutdown_grace_s,
            http: s.http.clone(),
            backpressure: s.backpressure,
            keep_alive: s.keep_alive,
            max_response_bytes: s.max_response_bytes,
            max_header_bytes: s.max_header_bytes,
            body_read_timeout_ms: s.body_read_timeout_ms,
            telemetry_json: self.inner.telemetry_json.clone(),
            state_backend: self.inner.state.backend.clone(),
            redis_url: self.inner.state.redis_url.clone(),
            sync_interval_ms: self.inner.state.sync_interval_ms,
            redis_timeout_ms: self.inner.state.redis_timeout_ms,
        }
    }

    #[getter]
    fn targets(&self) -> Vec<Target> {
        self.inner
            .targets
            .iter()
            .map(|t| Target {
                name: t.name.clone(),
                account: t.account.clone(),
                provider: t.provider.name(),
                base_url: t.base_url.clone(),
                api_key: t.api_key.clone(),
                api_version: t.api_version.clone(),
                headers: t.headers.clone(),
                model_id: t.model_id.clone(),
                region: t.cloud.region.clone(),
                project: t.cloud.project.clone(),
                service_account_json: t.cloud.service_account_json.clone(),
                service_account_file: t.cloud.service_account_file.clone(),
                aws_access_key_id: t.cloud.aws_access_key_id.clone(),
                aws_secret_access_key: t.cloud.aws_secret_access_key.clone(),
                aws_session_token: t.cloud.aws_session_token.clone(),
                aws_profile: t.cloud.aws_profile.clone(),
            })
            .collect()
    }

    #[getter]
    fn keys(&self) -> Vec<Key> {
        self.inner
            .keys
            .iter()
            .map(|k| Key {
                name: k.name.clone(),
                subject: k.subject.clone(),
                admin: k.admin,
            })
            .collect()
    }

    /// Valid but surely not meant: `"<source>: <path>: <message>"`, one per finding.
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.inner
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}
