//! The per-request telemetry record: its wire form, and how a proxied request's record is made.
//!
//! A record travels as a MessagePack array whose elements are its fields in order (the Python
//! `tollway.telemetry.record` Structs are `array_like` in the same order): the exporter decodes
//! them for metrics and spans as the core's values, and the request log keeps them as written
//! ([`super::wire`]). A proxied request's record is composed here ([`request_record`]) from
//! what the request path learned ([`RequestFacts`]) and what `admit` decided ([`Decision`]);
//! records of MCP requests are made by Python (`ToolRun`s) and decoded ([`decode_batch`]).

use super::mcp_spans::ToolRun;
use crate::engine::{Admission, Engine};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One upstream attempt, field for field the Python `tollway.telemetry.Attempt` (array-like).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Attempt {
    pub target: String,
    pub provider: String,
    pub request_model: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub status: u16,
    pub error_type: String,
    pub response_model: String,
    pub response_id: String,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub finish_reasons: Vec<String>,
    pub ttft_ms: Option<f64>,
    pub itl_mean_ms: Option<f64>,
    pub itl_max_ms: Option<f64>,
    pub cost_usd: Option<f64>,
    pub attempt: u32,
    pub fallback_reason: String,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i64>,
    pub top_p: Option<f64>,
    pub stream: bool,
    pub input_messages: Option<String>,
    pub output_text: Option<String>,
    /// The usage was counted by the gateway's tokenizer, not reported by the provider.
    #[serde(default)]
    pub usage_estimated: bool,
}

/// One gateway request, field for field the Python `tollway.telemetry.Record` (array-like).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Record {
    pub request_id: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub method: String,
    pub route: String,
    pub status: u16,
    pub key_name: String,
    pub subject: String,
    pub model: String,
    pub rule_ids: Vec<String>,
    pub metadata: Map<String, Value>,
    pub traceparent: String,
    pub attempts: Vec<Attempt>,
    pub error_type: String,
    /// `(rule id, result)` of the rate-limit rule that decided, if one applied.
    pub rate_limit: Option<(String, String)>,
    /// `(rule id, result)` of the budget rule that decided, if one applied.
    pub budget: Option<(String, String)>,
    /// The load-balancing rule id; empty when none applied.
    pub routing_rule: String,
    #[serde(default)]
    pub guardrails: Vec<GuardrailRun>,
    /// The targets the routing rule ordered, first choice first (when tracing).
    #[serde(default)]
    pub candidates: Vec<String>,
    #[serde(default)]
    pub tools: Vec<ToolRun>,
    /// The request log's part of the record (tollway.logs), not exported as spans.
    #[serde(default)]
    pub log: Option<LogPart>,
}

/// One guardrail run, field for field the Python `GuardrailRun` (array-like).
#[derive(Debug, Deserialize, Serialize)]
pub struct GuardrailRun {
    pub name: String,
    pub phase: String,
    pub result: String,
    pub start_ns: u64,
    pub end_ns: u64,
    #[serde(default)]
    pub categories: Vec<String>,
}

/// What only the request log reads, field for field the Python `LogPart` (array-like).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct LogPart {
    /// Whether the request may be logged (its metadata or header can keep it out).
    pub enabled: bool,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    pub stream: bool,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
}

/// Decodes a batch as the Python exporter sends it: a MessagePack array of records.
pub fn decode_batch(msgpack: &[u8]) -> Result<Vec<Record>, rmp_serde::decode::Error> {
    rmp_serde::from_slice(msgpack)
}

/// Decodes a batch written as a JSON array (the tests' readable fixtures).
#[cfg(test)]
pub(crate) fn decode_batch_json(json: &[u8]) -> Result<Vec<Record>, serde_json::Error> {
    serde_json::from_slice(json)
}

/// What `admit` decided, as the record reports it.
pub enum Decision<'a> {
    /// Refused before a decision (no key, a body that did not parse).
    None,
    Admitted(&'a Admission),
    /// Refused: the key if it authenticated, the refusal's code and deciding rule.
    Denied {
        key: Option<u32>,
        code: &'a str,
        rule_id: Option<&'a str>,
    },
}

/// One upstream attempt as the request path logged it (times are offsets from the start).
pub struct AttemptFacts {
    pub target: u32,
    pub start_s: f64,
    pub end_s: f64,
    pub status: u16,
    pub error_type: String,
    pub fallback_reason: String,
}

/// The request's sampling parameters, read from its body where they are numbers.
#[derive(Default)]
pub struct Params {
    pub model: String,
    pub stream: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<i64>,
    /// The request's `messages` as JSON text (only when content is captured).
    pub messages: Option<String>,
}

/// What a proxied request learned about itself (the Python `RequestLog`, read by the binding).
pub struct RequestFacts<'a> {
    pub request_id: String,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub route: String,
    pub status: u16,
    pub error_type: String,
    pub traceparent: String,
    /// None when the body was never read as a request.
    pub params: Option<Params>,
    pub attempts: Vec<AttemptFacts>,
    // Of the answer that reached the client:
    pub response_id: String,
    pub response_model: String,
    pub finish_reasons: Vec<String>,
    /// (input, cached input, output, cache write) tokens.
    pub usage: [i64; 4],
    pub usage_estimated: bool,
    pub cost_usd: f64,
    pub ttft_ms: Option<f64>,
    pub itl_mean_ms: Option<f64>,
    pub itl_max_ms: Option<f64>,
    pub output_text: Option<String>,
    pub guardrails: Vec<GuardrailRun>,
    /// Kept on spans only when content is captured (`output_text` may be there for the log).
    pub capture_content: bool,
    /// Tracing on: the routing rule's candidates are reported.
    pub tracing: bool,
    /// None without a request log; else the body cap (0: no bodies) and what was received.
    pub log: Option<LogFacts<'a>>,
}

/// For the request log: its body cap, the body as received, the `x-tfy-logging-config` header.
pub struct LogFacts<'a> {
    pub body_cap: usize,
    pub request_body: &'a [u8],
    pub logging_config: Option<&'a [u8]>,
}

/// A proxied request's record.
pub fn request_record(
    engine: &Engine,
    mut facts: RequestFacts<'_>,
    decision: Decision<'_>,
) -> Record {
    use std::mem::take;
    let mut rec = Record {
        request_id: take(&mut facts.request_id),
        start_ns: facts.start_ns,
        end_ns: facts.start_ns.saturating_add(facts.duration_ns),
        method: "POST".to_owned(),
        route: take(&mut facts.route),
        status: facts.status,
        traceparent: take(&mut facts.traceparent),
        error_type: take(&mut facts.error_type),
        guardrails: take(&mut facts.guardrails),
        ..Record::default()
    };
    match decision {
        Decision::None => {}
        Decision::Admitted(adm) => {
            if let Some(key) = engine.keys.get(adm.key as usize) {
                rec.key_name.clone_from(&key.name);
                rec.subject.clone_from(&key.subject);
            }
            rec.metadata = adm
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let [routing, limit, budget, _] = &adm.rule_ids;
            if let Some(id) = routing {
                rec.routing_rule.clone_from(id);
                rec.rule_ids.push(id.clone());
                if facts.tracing {
                    rec.candidates = adm
                        .plans
                        .iter()
                        .filter_map(|&p| target_of(engine, p))
                        .map(|t| t.name.clone())
                        .collect();
                }
            }
            if let Some(id) = limit {
                rec.rule_ids.push(id.clone());
                rec.rate_limit = Some((id.clone(), "allowed".to_owned()));
            }
            if let Some(id) = budget {
                rec.rule_ids.push(id.clone());
                let result = if adm.budget_over_audit {
                    "over_limit_audit"
                } else {
                    "allowed"
                };
                rec.budget = Some((id.clone(), result.to_owned()));
            }
        }
        Decision::Denied { key, code, rule_id } => {
            if let Some(key) = key.and_then(|k| engine.keys.get(k as usize)) {
                rec.key_name.clone_from(&key.name);
                rec.subject.clone_from(&key.subject);
            }
            if let Some(id) = rule_id.filter(|id| !id.is_empty()) {
                let refusal = Some((id.to_owned(), "blocked".to_owned()));
                if code == "budget_exceeded" {
                    rec.budget = refusal;
                } else {
                    rec.rate_limit = refusal;
                }
                rec.rule_ids.push(id.to_owned());
            }
        }
    }
    let stream = facts.params.as_ref().is_some_and(|p| p.stream);
    if let Some(log) = &facts.log {
        rec.log = Some(log_part(log, &rec.metadata, &facts, stream));
    }
    if let Some(mut params) = facts.params.take() {
        rec.model = take(&mut params.model);
        rec.attempts = attempts(engine, &facts, params, rec.start_ns);
    }
    rec
}

fn target_of(engine: &Engine, plan: u32) -> Option<&crate::engine::Target> {
    let plan = engine.plans.get(plan as usize)?;
    engine.targets.get(plan.target as usize)
}

/// Offset seconds from the request's start as wall-clock nanoseconds.
fn wall_ns(start_ns: u64, offset_s: f64) -> u64 {
    start_ns.saturating_add_signed((offset_s * 1e9) as i64)
}

fn attempts(engine: &Engine, f: &RequestFacts<'_>, params: Params, start_ns: u64) -> Vec<Attempt> {
    // The answer the client got came from the last attempt; the others answered nothing.
    let answered = if f.status < 400 { f.attempts.len() } else { 0 };
    let mut out = Vec::with_capacity(f.attempts.len());
    let mut messages = params.messages;
    for (i, a) in f.attempts.iter().enumerate() {
        let n = i + 1;
        let (target, provider, model) = engine
            .targets
            .get(a.target as usize)
            .map_or(("", "", ""), |t| {
                (t.name.as_str(), t.provider.name(), t.model_id.as_str())
            });
        let mut attempt = Attempt {
            target: target.to_owned(),
            provider: provider.to_owned(),
            request_model: model.to_owned(),
            start_ns: wall_ns(start_ns, a.start_s),
            end_ns: wall_ns(start_ns, a.end_s),
            status: a.status,
            error_type: a.error_type.clone(),
            attempt: n as u32,
            fallback_reason: a.fallback_reason.clone(),
            temperature: params.temperature,
            max_tokens: params.max_tokens,
            top_p: params.top_p,
            stream: params.stream,
            // Every attempt sent the same messages: the last one takes them without a copy.
            input_messages: if n == f.attempts.len() {
                messages.take()
            } else {
                messages.clone()
            },
            ..Attempt::default()
        };
        if n == answered {
            attempt.response_model.clone_from(&f.response_model);
            attempt.response_id.clone_from(&f.response_id);
            attempt.input_tokens = Some(f.usage[0]);
            attempt.output_tokens = Some(f.usage[2]);
            attempt.finish_reasons.clone_from(&f.finish_reasons);
            attempt.ttft_ms = f.ttft_ms;
            attempt.itl_mean_ms = f.itl_mean_ms;
            attempt.itl_max_ms = f.itl_max_ms;
            attempt.cost_usd = Some(f.cost_usd);
            attempt.usage_estimated = f.usage_estimated;
            if f.capture_content {
                attempt.output_text.clone_from(&f.output_text);
            }
        }
        out.push(attempt);
    }
    out
}

/// Whether the request may be logged: not when its metadata says `tfy_log_request: "false"`
/// or its `x-tfy-logging-config` header `{"enabled": false}`.
fn log_enabled(metadata: &Map<String, Value>, header: Option<&[u8]>) -> bool {
    if metadata.get("tfy_log_request").and_then(Value::as_str) == Some("false") {
        return false;
    }
    let Some(header) = header.filter(|h| h.windows(5).any(|w| w == b"false")) else {
        return true;
    };
    match serde_json::from_slice::<Value>(header) {
        Ok(Value::Object(config)) => config.get("enabled") != Some(&Value::Bool(false)),
        _ => true,
    }
}

fn log_part(
    log: &LogFacts<'_>,
    metadata: &Map<String, Value>,
    f: &RequestFacts<'_>,
    stream: bool,
) -> LogPart {
    let enabled = log_enabled(metadata, log.logging_config);
    let (mut request_body, mut response_body) = (None, None);
    if log.body_cap > 0 && enabled {
        let body = &log.request_body[..log.body_cap.min(log.request_body.len())];
        request_body = Some(String::from_utf8_lossy(body).into_owned());
        response_body = f.output_text.as_deref().map(|t| {
            // The cap counts characters, as Python's slice of the text does.
            let end = t
                .char_indices()
                .nth(log.body_cap)
                .map_or(t.len(), |(i, _)| i);
            t[..end].to_owned()
        });
    }
    LogPart {
        enabled,
        input_tokens: f.usage[0],
        cached_tokens: f.usage[1],
        output_tokens: f.usage[2],
        cost_usd: f.cost_usd,
        stream,
        request_body,
        response_body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn engine() -> Engine {
        let docs = [
            json!({"type": "provider-account", "name": "mock", "provider": "openai-compatible",
                   "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-provider",
                   "models": ["gpt-4o-mini", {"name": "big", "model_id": "gpt-4o"}]}),
            json!({"type": "gateway-keys", "keys": [
                {"name": "k1", "key": "secret-key-1", "subject": "user:a"}]}),
            json!({"type": "gateway-load-balancing-config", "name": "lb", "rules": [
                {"id": "split", "type": "weight-based-routing", "when": {"models": ["chat"]},
                 "load_balance_targets": [{"target": "mock/gpt-4o-mini", "weight": 50},
                                          {"target": "mock/big", "weight": 50}]}]}),
            json!({"type": "gateway-rate-limiting-config", "name": "rl", "rules": [
                {"id": "per-user", "when": {"subjects": ["user:a"]}, "limit_to": 1000,
                 "unit": "requests_per_minute"}]}),
        ];
        let docs = docs
            .into_iter()
            .enumerate()
            .map(|(i, d)| json!({"source": format!("t.yaml#{}", i + 1), "doc": d}))
            .collect();
        Engine::compile(&Value::Array(docs)).unwrap()
    }

    fn facts<'a>(status: u16, attempts: Vec<AttemptFacts>) -> RequestFacts<'a> {
        RequestFacts {
            request_id: "req-1".into(),
            start_ns: 1_000_000_000,
            duration_ns: 5_000_000,
            route: "/v1/chat/completions".into(),
            status,
            error_type: String::new(),
            traceparent: String::new(),
            params: Some(Params {
                model: "chat".into(),
                temperature: Some(0.5),
                max_tokens: Some(25),
                messages: Some("[]".into()),
                ..Params::default()
            }),
            attempts,
            response_id: "chatcmpl-1".into(),
            response_model: "gpt-4o".into(),
            finish_reasons: vec!["stop".into()],
            usage: [20, 5, 7, 0],
            usage_estimated: false,
            cost_usd: 0.25,
            ttft_ms: None,
            itl_mean_ms: None,
            itl_max_ms: None,
            output_text: Some("héllo wörld".into()),
            guardrails: Vec::new(),
            capture_content: false,
            tracing: true,
            log: None,
        }
    }

    fn attempt(target: u32, start_s: f64, status: u16, fallback_reason: &str) -> AttemptFacts {
        AttemptFacts {
            target,
            start_s,
            end_s: start_s + 0.001,
            status,
            error_type: if status >= 400 {
                status.to_string()
            } else {
                String::new()
            },
            fallback_reason: fallback_reason.into(),
        }
    }

    #[test]
    fn an_admitted_request_reports_its_rules_key_and_the_answering_attempt() {
        let e = engine();
        let adm = e
            .admit(
                Some("Bearer secret-key-1"),
                "chat",
                Some(br#"{"team":"t"}"#),
                None,
            )
            .unwrap();
        let tries = vec![attempt(0, 0.001, 503, ""), attempt(1, 0.002, 200, "503")];
        let rec = request_record(&e, facts(200, tries), Decision::Admitted(&adm));
        assert_eq!(
            (rec.key_name.as_str(), rec.subject.as_str()),
            ("k1", "user:a")
        );
        assert_eq!(rec.end_ns, 1_005_000_000);
        assert_eq!(rec.rule_ids, ["split", "per-user"]);
        assert_eq!(rec.routing_rule, "split");
        assert_eq!(rec.rate_limit, Some(("per-user".into(), "allowed".into())));
        assert_eq!(
            rec.candidates.len(),
            2,
            "tracing reports the rule's candidates"
        );
        assert_eq!(rec.metadata.get("team"), Some(&json!("t")));
        let [first, second] = &rec.attempts[..] else {
            panic!("two attempts")
        };
        assert_eq!(
            (first.target.as_str(), first.request_model.as_str()),
            ("mock/gpt-4o-mini", "gpt-4o-mini")
        );
        assert_eq!(first.provider, "openai-compatible");
        assert_eq!(
            (first.response_id.as_str(), first.input_tokens),
            ("", None),
            "it answered nothing"
        );
        assert_eq!(second.fallback_reason, "503");
        assert_eq!(second.start_ns, 1_002_000_000);
        assert_eq!(
            (second.input_tokens, second.output_tokens, second.cost_usd),
            (Some(20), Some(7), Some(0.25))
        );
        assert_eq!(second.finish_reasons, ["stop"]);
        assert_eq!(second.input_messages.as_deref(), Some("[]"));
        assert_eq!(first.input_messages.as_deref(), Some("[]"));
        assert_eq!(
            second.output_text, None,
            "answer text only when content is captured"
        );
        assert_eq!(
            (second.temperature, second.max_tokens, second.attempt),
            (Some(0.5), Some(25), 2)
        );
        assert!(rec.log.is_none(), "no request log configured");
    }

    #[test]
    fn a_failed_request_credits_no_attempt_with_the_answer() {
        let e = engine();
        let adm = e
            .admit(Some("Bearer secret-key-1"), "mock/big", None, None)
            .unwrap();
        let rec = request_record(
            &e,
            facts(502, vec![attempt(1, 0.0, 502, "")]),
            Decision::Admitted(&adm),
        );
        assert_eq!(rec.attempts[0].response_id, "");
        assert_eq!(rec.attempts[0].cost_usd, None);
        assert!(rec.candidates.is_empty(), "no routing rule applied");
    }

    #[test]
    fn a_refusal_names_its_key_and_the_rule_that_refused() {
        let e = engine();
        for (code, limit, budget) in [
            ("rate_limited", true, false),
            ("budget_exceeded", false, true),
        ] {
            let denied = Decision::Denied {
                key: Some(0),
                code,
                rule_id: Some("r1"),
            };
            let rec = request_record(&e, facts(429, Vec::new()), denied);
            assert_eq!(rec.key_name, "k1");
            assert_eq!(rec.rule_ids, ["r1"]);
            let blocked = Some(("r1".to_owned(), "blocked".to_owned()));
            assert_eq!(rec.rate_limit == blocked, limit, "{code}");
            assert_eq!(rec.budget == blocked, budget, "{code}");
        }
        let rec = request_record(&e, facts(401, Vec::new()), Decision::None);
        assert!(rec.key_name.is_empty() && rec.rule_ids.is_empty());
    }

    #[test]
    fn the_log_part_keeps_capped_bodies_unless_the_request_opts_out() {
        let e = engine();
        let body = "é".repeat(10);
        let part = |cap: usize, meta: &[u8], header: Option<&[u8]>| {
            let adm = e
                .admit(Some("Bearer secret-key-1"), "mock/big", Some(meta), None)
                .unwrap();
            let mut f = facts(200, Vec::new());
            f.log = Some(LogFacts {
                body_cap: cap,
                request_body: body.as_bytes(),
                logging_config: header,
            });
            request_record(&e, f, Decision::Admitted(&adm)).log.unwrap()
        };
        let p = part(3, b"{}", None);
        assert!(p.enabled);
        assert_eq!(
            (p.input_tokens, p.cached_tokens, p.output_tokens),
            (20, 5, 7)
        );
        // Three bytes of the body (a character cut in half is replaced), three characters of
        // the answer.
        assert_eq!(p.request_body.as_deref(), Some("é\u{fffd}"));
        assert_eq!(p.response_body.as_deref(), Some("hél"));
        assert!(
            part(0, b"{}", None).request_body.is_none(),
            "cap 0: no bodies"
        );
        assert!(!part(3, br#"{"tfy_log_request":"false"}"#, None).enabled);
        assert!(!part(3, b"{}", Some(br#"{"enabled": false}"#)).enabled);
        let kept = part(3, b"{}", Some(br#"{"enabled": true, "x": "false"}"#));
        assert!(kept.enabled && kept.request_body.is_some());
        assert!(
            part(3, b"{}", Some(b"false")).enabled,
            "not an object: ignored"
        );
    }

    #[test]
    fn a_written_record_reads_back_field_for_field() {
        let e = engine();
        let adm = e
            .admit(Some("Bearer secret-key-1"), "chat", None, None)
            .unwrap();
        let mut f = facts(200, vec![attempt(0, 0.001, 200, "")]);
        f.log = Some(LogFacts {
            body_cap: 100,
            request_body: b"{}",
            logging_config: None,
        });
        f.guardrails.push(GuardrailRun {
            name: "pii".into(),
            phase: "input".into(),
            result: "mutate".into(),
            start_ns: 1,
            end_ns: 2,
            categories: vec!["EMAIL".into()],
        });
        let records = vec![request_record(&e, f, Decision::Admitted(&adm))];
        let batch = super::super::wire::write_array(&records);
        let serde = rmp_serde::to_vec(&records).unwrap();
        assert_eq!(batch, serde, "the serde form, byte for byte");
        let (back, rec) = (decode_batch(&batch).unwrap().remove(0), &records[0]);
        assert_eq!(back.request_id, rec.request_id);
        assert_eq!(back.attempts[0].response_model, "gpt-4o");
        assert_eq!(back.guardrails[0].categories, ["EMAIL"]);
        assert_eq!(back.rate_limit, rec.rate_limit);
        let log = back.log.unwrap();
        assert!(log.enabled);
        assert_eq!(log.request_body.as_deref(), Some("{}"));
        assert_eq!(log.output_tokens, 7);
    }
}
