//! The per-request half of the engine: one `admit` call before the upstream, one `settle`
//! after it. Admission decides in order: key (401), metadata (400), model (404), permission
//! (403), routing order (404 for a virtual model no rule matches), guardrails (the rule's and
//! `X-TFY-GUARDRAILS`, 400 for a bad header), budget, then rate limit (429) - so a request
//! refused for any earlier reason consumes no quota.

use crate::engine::{Engine, KeyId, TargetId};
use crate::guardrails::{GuardrailId, Selection};
use crate::limits::cost;
use crate::limits::ratelimit::Ticket;
use crate::limits::reserve::{self, RequestSize, Reservation};
use crate::limits::RequestFacts;
use crate::metadata::{self, Metadata};
use crate::routing::{self, PlanId};
use crate::schema::shorten;
use sha2::{Digest, Sha256};

/// Why a request is refused, with everything needed for an OpenAI-style error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    pub error_type: &'static str,
    pub code: &'static str,
    pub param: Option<&'static str>,
    pub message: String,
    /// Extra response headers (`retry-after`, `x-ratelimit-*` on 429).
    pub headers: Vec<(&'static str, String)>,
    /// The rate-limit or budget rule that refused the request (429 only).
    pub rule_id: Option<String>,
    /// The authenticated key, for refusals after authentication.
    pub key: Option<KeyId>,
}

impl Denial {
    fn new(status: u16, error_type: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status,
            error_type,
            code,
            param: None,
            message,
            headers: Vec::new(),
            rule_id: None,
            key: None,
        }
    }

    fn unauthorized(message: &str) -> Self {
        Self::new(
            401,
            "invalid_request_error",
            "invalid_api_key",
            message.to_owned(),
        )
    }

    fn model(status: u16, error_type: &'static str, code: &'static str, message: String) -> Self {
        Self {
            param: Some("model"),
            ..Self::new(status, error_type, code, message)
        }
    }
}

/// An admitted request: who it is, where it may go (plans in order, see [`Engine::plans`]),
/// and what settle needs to charge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub key: KeyId,
    /// The model name the client asked for (limit and budget rules match on it at settle).
    pub model: String,
    pub rule: Option<u32>,
    pub plans: Vec<PlanId>,
    pub metadata: Metadata,
    /// The rate-limit bucket to debit with real token usage at settle.
    pub ticket: Option<Ticket>,
    /// `x-ratelimit-*` for the response, when a rate limit applies.
    pub limit_headers: Vec<(&'static str, String)>,
    /// JSON for `x-tfy-applied-configurations`, e.g. `{"load_balancing":"r1"}`; empty if none.
    pub applied: String,
    /// Rule ids by kind, for telemetry: (routing, rate limit, budget, guardrails).
    pub rule_ids: [Option<String>; 4],
    /// The guardrails this request runs (ids into `Engine::guardrails`).
    pub guardrails: Selection,
    /// What the selected metadata-validation guardrails found (by id; only those that flag):
    /// decided here, where the merged metadata is, so it never crosses to Python and back.
    pub metadata_violations: Vec<(GuardrailId, Vec<String>)>,
    /// The deciding budget rule is in audit mode and its spend is over the limit.
    pub budget_over_audit: bool,
    /// The estimate held on the budgets until settle (given back if settle never comes).
    pub reservation: Option<Reservation>,
}

/// What `settle` learns from one upstream attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttemptOutcome {
    pub target: TargetId,
    /// HTTP status, or `routing::OUTCOME_*` for failures without one.
    pub status: u16,
    pub latency_ms: f64,
    pub output_tokens: u32,
}

/// Token usage of the answer (or of what was seen of it), for limits, cost and budgets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    /// Prompt tokens written to the provider's cache (part of `input_tokens`).
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
}

/// `x-tfy-applied-configurations`: the applied rule ids by kind, as a JSON object.
fn applied_json(applied: Vec<(&str, &str)>) -> String {
    // Written directly (each kind appears once): a JSON value tree cost ~7k instructions.
    let mut out = Vec::with_capacity(96);
    out.push(b'{');
    for (i, (kind, id)) in applied.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(&mut out, kind);
        out.push(b':');
        push_json_str(&mut out, id);
    }
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

/// `s` as a JSON string literal.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The key of an `Authorization` header value (`Bearer <key>`, any case of the scheme): the
/// one reading of it, for admission and for scrubbing the key out of what the client is sent.
pub fn bearer_token(header: &str) -> Option<&str> {
    match header.trim().split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
            Some(rest.trim()).filter(|t| !t.is_empty())
        }
        _ => None,
    }
}

impl Engine {
    /// Finds the key of an `Authorization` header value (`Bearer <key>`).
    // A denial is a value on the rare path; the Admission it competes with is as large.
    #[allow(clippy::result_large_err)]
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<KeyId, Denial> {
        let Some(header) = authorization.map(str::trim).filter(|h| !h.is_empty()) else {
            return Err(Denial::unauthorized(
                "Missing API key: send it as 'Authorization: Bearer <key>'",
            ));
        };
        let Some(token) = bearer_token(header) else {
            return Err(Denial::unauthorized(
                "Malformed Authorization header: expected 'Bearer <key>'",
            ));
        };
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.key_ids
            .get(&hash)
            .copied()
            .ok_or_else(|| Denial::unauthorized("Invalid API key"))
    }

    /// Decides one request (see the module comment for the order of checks).
    #[allow(clippy::result_large_err)]
    pub fn admit(
        &self,
        authorization: Option<&str>,
        model: &str,
        metadata_header: Option<&[u8]>,
        guardrails_header: Option<&[u8]>,
    ) -> Result<Admission, Denial> {
        self.admit_sized(
            authorization,
            model,
            metadata_header,
            guardrails_header,
            RequestSize::default(),
        )
    }

    /// [`Engine::admit`] with the request's size, for the cost a budget reserves.
    #[allow(clippy::result_large_err)]
    pub fn admit_sized(
        &self,
        authorization: Option<&str>,
        model: &str,
        metadata_header: Option<&[u8]>,
        guardrails_header: Option<&[u8]>,
        size: RequestSize,
    ) -> Result<Admission, Denial> {
        let key_id = self.authenticate(authorization)?;
        // A refusal after authentication still says whose request it was (telemetry).
        self.decide(key_id, model, metadata_header, guardrails_header, size)
            .map_err(|d| Denial {
                key: Some(key_id),
                ..d
            })
    }

    #[allow(clippy::result_large_err)]
    fn decide(
        &self,
        key_id: KeyId,
        model: &str,
        metadata_header: Option<&[u8]>,
        guardrails_header: Option<&[u8]>,
        size: RequestSize,
    ) -> Result<Admission, Denial> {
        let key = &self.keys[key_id as usize];
        let request_meta = match metadata_header {
            Some(raw) => metadata::parse(raw).map_err(|message| Denial {
                param: Some("X-TFY-METADATA"),
                ..Denial::new(400, "invalid_request_error", "invalid_metadata", message)
            })?,
            None => Vec::new(),
        };
        let model_id = self.model_ids.get(model).copied();
        let metadata = metadata::merge(request_meta, &key.metadata);
        let facts = RequestFacts {
            subject: &key.subject,
            model,
            metadata: &metadata,
            tool: None,
        };
        let matched = self.routing_rule(model_id, &facts);
        // Messages are built only on refusal: nothing is allocated for an admitted request.
        let name = || shorten(model, 100);
        let not_found =
            |msg: String| Denial::model(404, "invalid_request_error", "model_not_found", msg);
        if model_id.is_none() && matched.is_none() {
            return Err(not_found(format!("The model '{}' does not exist", name())));
        }
        let allowed = match model_id {
            Some(id) => key.allowed[id as usize],
            None => key.allowed_globs.is_match(model),
        };
        if !allowed {
            let msg = format!("This key may not use the model '{}'", name());
            return Err(Denial::model(
                403,
                "permission_error",
                "model_not_allowed",
                msg,
            ));
        }
        let plans = match (matched, model_id) {
            (Some(r), _) => routing::order(
                &self.rules[r as usize],
                &self.plans,
                &self.states,
                &self.clock,
                &self.rng,
            ),
            (None, Some(id)) if (id as usize) < self.targets.len() => vec![id],
            (None, _) => {
                return Err(not_found(format!(
                    "No routing rule for the virtual model '{}' matches this request",
                    name()
                )))
            }
        };
        let guardrails = self
            .guardrails
            .select(&facts, guardrails_header)
            .map_err(|message| Denial {
                param: Some("X-TFY-GUARDRAILS"),
                ..Denial::new(400, "invalid_request_error", "invalid_guardrails", message)
            })?;
        let guardrail_rule = guardrails
            .rule
            .map(|r| self.guardrails.rules[r].id.as_str());
        let metadata_violations = guardrails
            .input
            .iter()
            .filter_map(|&id| {
                let found = self.guardrails.validate_metadata(id, &metadata);
                (!found.is_empty()).then(|| (id, found.iter().map(ToString::to_string).collect()))
            })
            .collect();
        let mut applied: Vec<(&str, &str)> = Vec::new();
        if let Some(r) = matched {
            applied.push(("load_balancing", &self.rules[r as usize].id));
        }
        let estimate = if self.budgets.is_empty() {
            0.0
        } else {
            let targets = plans.iter().filter_map(|&p| {
                let t = self.plans.get(p as usize)?.target;
                Some((t, self.targets.get(t as usize)?.price.as_ref()))
            });
            reserve::estimate(size, targets, &self.output_estimates)
        };
        let (budget, reservation) =
            self.budgets
                .check_and_reserve(self.clock.wall_ms(), &facts, estimate);
        if let Some(r) = budget.rule {
            applied.push(("budget", self.budgets.rule_id(r)));
        }
        if !budget.allowed {
            return Err(Denial {
                headers: vec![
                    ("retry-after", budget.reset_s.to_string()),
                    ("x-tfy-applied-configurations", applied_json(applied)),
                ],
                rule_id: budget.rule.map(|r| self.budgets.rule_id(r).to_owned()),
                ..Denial::new(
                    429,
                    "rate_limit_error",
                    "budget_exceeded",
                    self.budgets.message(&budget),
                )
            });
        }
        let limit = self.rate_limiter.check(self.clock.now_ms(), &facts);
        if let Some(r) = limit.rule {
            applied.push(("rate_limiting", self.rate_limiter.rule_id(r)));
        }
        if !limit.allowed {
            let mut headers = limit.headers();
            headers.push(("x-tfy-applied-configurations", applied_json(applied)));
            return Err(Denial {
                headers,
                rule_id: limit.rule.map(|r| self.rate_limiter.rule_id(r).to_owned()),
                ..Denial::new(
                    429,
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    self.rate_limiter.message(&limit),
                )
            });
        }
        if let Some(id) = guardrail_rule {
            applied.push(("guardrails", id));
        }
        let rule_ids = [
            matched.map(|r| self.rules[r as usize].id.clone()),
            limit.rule.map(|r| self.rate_limiter.rule_id(r).to_owned()),
            budget.rule.map(|r| self.budgets.rule_id(r).to_owned()),
            guardrail_rule.map(str::to_owned),
        ];
        let applied = if applied.is_empty() {
            String::new()
        } else {
            applied_json(applied)
        };
        Ok(Admission {
            key: key_id,
            model: model.to_owned(),
            rule: matched,
            plans,
            ticket: limit.ticket,
            limit_headers: if limit.rule.is_some() {
                limit.headers()
            } else {
                Vec::new()
            },
            metadata,
            applied,
            rule_ids,
            guardrails,
            metadata_violations,
            budget_over_audit: budget.audit && budget.over,
            reservation,
        })
    }

    /// The first routing rule that applies: among those naming the model (or naming none,
    /// for a name nothing defines), the first whose subjects and metadata match.
    fn routing_rule(
        &self,
        model_id: Option<super::ModelId>,
        facts: &RequestFacts<'_>,
    ) -> Option<u32> {
        let candidates = match model_id {
            Some(id) => &self.rules_by_model[id as usize],
            None => &self.any_model_rules,
        };
        candidates
            .iter()
            .copied()
            .find(|&r| self.rules[r as usize].when.matches(facts))
    }

    /// Feeds back one request: every attempt's outcome (latency scores, health), and the
    /// usage of the answer (token buckets debited, cost charged to every matching budget).
    /// Returns the cost in USD of the target that answered (the last attempt).
    pub fn settle(&self, admission: &Admission, attempts: &[AttemptOutcome], usage: Usage) -> f64 {
        let now = self.clock.now_ms();
        self.record_outcomes(attempts);
        if let Some(ticket) = admission.ticket {
            self.rate_limiter
                .debit(now, ticket, usage.input_tokens + usage.output_tokens);
        }
        let last = attempts.last();
        if let Some(a) = last.filter(|a| (200..300).contains(&a.status)) {
            if usage.output_tokens > 0 {
                self.output_estimates.record(a.target, usage.output_tokens);
            }
        }
        let price = last
            .and_then(|a| self.targets.get(a.target as usize))
            .and_then(|t| t.price.as_ref());
        let tokens = cost::TokenUsage {
            input: usage.input_tokens,
            cached_input: usage.cached_input_tokens,
            cache_write: usage.cache_write_tokens,
            output: usage.output_tokens,
        };
        let usd = cost::cost(price, &tokens).usd;
        if (usd > 0.0 || admission.reservation.is_some()) && !self.budgets.is_empty() {
            let key = &self.keys[admission.key as usize];
            let facts = RequestFacts {
                subject: &key.subject,
                model: &admission.model,
                metadata: &admission.metadata,
                tool: None,
            };
            self.budgets.settle(
                self.clock.wall_ms(),
                &facts,
                usd,
                admission.reservation.as_ref(),
            );
        }
        usd
    }

    /// The response-cache plan of an admitted request (see [`crate::cache::plan`]).
    pub fn cache_plan(
        &self,
        admission: &Admission,
        header: Option<&str>,
        api: &str,
        body: &[u8],
    ) -> Result<Option<crate::cache::CachePlan>, String> {
        let key = &self.keys[admission.key as usize];
        let facts = RequestFacts {
            subject: &key.subject,
            model: &admission.model,
            metadata: &admission.metadata,
            tool: None,
        };
        crate::cache::plan(&self.cache_rules, &facts, header, api, body)
    }

    /// Latency scores and health from attempts (the routing half of `settle`).
    pub fn record_outcomes(&self, attempts: &[AttemptOutcome]) {
        let now = self.clock.now_ms();
        for a in attempts {
            if let Some(state) = self.states.get(a.target as usize) {
                state.record(now, a.status, a.latency_ms, a.output_tokens);
            }
        }
    }

    pub fn healthy(&self, target: TargetId) -> bool {
        self.states
            .get(target as usize)
            .is_some_and(|s| s.healthy(self.clock.now_ms()))
    }
}

#[cfg(test)]
mod tests {
    use super::{applied_json, bearer_token};

    #[test]
    fn the_bearer_token_is_read_once_for_admission_and_scrubbing() {
        assert_eq!(bearer_token("Bearer sk-1"), Some("sk-1"));
        assert_eq!(bearer_token("  bEaReR   sk-1  "), Some("sk-1"));
        assert_eq!(bearer_token("Basic sk-1"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer    "), None);
        assert_eq!(bearer_token("sk-1"), None);
    }

    #[test]
    fn applied_configurations_are_json_in_the_order_applied() {
        let applied = vec![("load_balancing", "split \"a\""), ("rate_limiting", "r\\1")];
        let text = applied_json(applied.clone());
        let back: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).expect("valid JSON");
        let pairs: Vec<(&str, &str)> = back
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
            .collect();
        assert_eq!(pairs, applied);
        assert_eq!(applied_json(Vec::new()), "{}");
    }
}
