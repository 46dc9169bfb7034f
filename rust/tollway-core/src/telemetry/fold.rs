//! What a batch of finished requests adds to the Prometheus totals and the access log, in one
//! pass over the records the OTLP encoder decodes anyway ([`super::record::decode_batch`]).
//!
//! The families, their label names and the histogram buckets stay with the metrics store
//! (`tollway.telemetry.metrics`, which hands the buckets over): this returns, per family,
//! label values in the store's order and the amounts to add (counters summed over the batch,
//! histogram rows counted over the batch in the store's layout). The labels a record
//! contributes are decided here and only here.

use super::record::Record;
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;
use std::collections::hash_map::Entry;
use std::fmt::Write as _;

/// Label values of one series, in the family's label order.
pub type Labels = Vec<String>;

/// What one batch adds.
#[derive(Debug, Default, PartialEq)]
pub struct Folded {
    /// `(family, labels, amount)`, one entry per series touched (summed over the batch).
    pub counters: Vec<(&'static str, Labels, f64)>,
    /// `(family, labels, row)`, one entry per series touched: the row is what the batch adds
    /// to the series' histogram, a count per bucket (`le`, as Python's `bisect_left` places a
    /// value), then the `+Inf` count, then the sum.
    pub observations: Vec<(&'static str, Labels, Vec<f64>)>,
    /// One JSON access-log line per request, joined by `\n` (empty unless asked for).
    pub access_log: String,
    /// Guardrail runs in order as `(name, failed)`, keeping only a run whose state differs
    /// from the name's previous run in this batch: the store logs outages as they start/end.
    pub guardrail_health: Vec<(String, bool)>,
}

/// The metadata labels: which keys, and how many distinct values each may take before new
/// ones are folded into `"other"` (bounded cardinality across the worker's lifetime).
pub struct RecordFold {
    meta_keys: Vec<String>,
    cap: usize,
    seen: Vec<FxHashSet<String>>,
    /// Each histogram family's upper bounds, ascending (a family not named has none).
    buckets: FxHashMap<String, Vec<f64>>,
}

/// Label values borrowed from the batch's records while it is folded.
type Borrowed<'a> = Vec<&'a str>;

/// The batch's series so far: labels are owned only once per series, not per record.
#[derive(Default)]
struct Acc<'a> {
    counters: FxHashMap<(&'static str, Borrowed<'a>), usize>,
    obs: FxHashMap<(&'static str, Borrowed<'a>), usize>,
    health: FxHashMap<&'a str, bool>,
    out: Folded,
}

fn owned(labels: &[&str]) -> Labels {
    labels.iter().map(|s| (*s).to_owned()).collect()
}

impl<'a> Acc<'a> {
    fn add(&mut self, family: &'static str, labels: Borrowed<'a>, amount: f64) {
        let counters = &mut self.out.counters;
        match self.counters.entry((family, labels)) {
            Entry::Occupied(e) => counters[*e.get()].2 += amount,
            Entry::Vacant(e) => {
                counters.push((family, owned(&e.key().1), amount));
                e.insert(counters.len() - 1);
            }
        }
    }

    fn observe(&mut self, family: &'static str, labels: Borrowed<'a>, value: f64) {
        let observations = &mut self.out.observations;
        match self.obs.entry((family, labels)) {
            Entry::Occupied(e) => observations[*e.get()].2.push(value),
            Entry::Vacant(e) => {
                observations.push((family, owned(&e.key().1), vec![value]));
                e.insert(observations.len() - 1);
            }
        }
    }

    fn guardrail(&mut self, name: &'a str, failed: bool) {
        if self.health.insert(name, failed) != Some(failed) {
            self.out.guardrail_health.push((name.to_owned(), failed));
        }
    }
}

fn with_meta<'a>(mut labels: Borrowed<'a>, meta: &[&'a str]) -> Borrowed<'a> {
    labels.extend_from_slice(meta);
    labels
}

impl RecordFold {
    pub fn new(meta_keys: Vec<String>, cap: usize, buckets: FxHashMap<String, Vec<f64>>) -> Self {
        let seen = meta_keys.iter().map(|_| FxHashSet::default()).collect();
        Self {
            meta_keys,
            cap,
            seen,
            buckets,
        }
    }

    /// A batch's observations of `family` as a histogram row (see [`Folded::observations`]).
    fn row(&self, family: &str, values: &[f64]) -> Vec<f64> {
        let bounds = self.buckets.get(family).map_or(&[][..], Vec::as_slice);
        let mut row = vec![0.0; bounds.len() + 2];
        for &v in values {
            row[bounds.partition_point(|b| *b < v)] += 1.0;
            row[bounds.len() + 1] += v;
        }
        row
    }

    /// The metadata label values of a request (`""` for a key it does not carry).
    fn meta<'a>(&mut self, rec: &'a Record) -> Borrowed<'a> {
        let mut out = Vec::with_capacity(self.meta_keys.len());
        for (key, seen) in self.meta_keys.iter().zip(&mut self.seen) {
            let mut value = match rec.metadata.get(key) {
                Some(Value::String(s)) => s.as_str(),
                _ => "",
            };
            if !value.is_empty() && !seen.contains(value) {
                if seen.len() >= self.cap {
                    value = "other";
                } else {
                    seen.insert(value.to_owned());
                }
            }
            out.push(value);
        }
        out
    }

    /// Folds a batch; `access_log`: also write its access-log lines.
    pub fn fold(&mut self, records: &[Record], access_log: bool) -> Folded {
        // The status labels, as text that outlives the fold (the series borrow their labels).
        let statuses: Vec<(String, Vec<String>)> = records
            .iter()
            .map(|r| {
                let text = |s| itoa::Buffer::new().format(s).to_owned();
                (
                    text(r.status),
                    r.attempts.iter().map(|a| text(a.status)).collect(),
                )
            })
            .collect();
        let mut acc = Acc::default();
        for (rec, (status, attempts)) in records.iter().zip(&statuses) {
            self.fold_one(rec, status, attempts, &mut acc);
            if access_log {
                if !acc.out.access_log.is_empty() {
                    acc.out.access_log.push('\n');
                }
                access_line(rec, &mut acc.out.access_log);
            }
        }
        let mut out = acc.out;
        for (family, _, values) in &mut out.observations {
            *values = self.row(family, values);
        }
        out
    }

    fn fold_one<'a>(
        &mut self,
        rec: &'a Record,
        status: &'a str,
        attempt_status: &'a [String],
        acc: &mut Acc<'a>,
    ) {
        let guardrails = |acc: &mut Acc<'a>| {
            for g in &rec.guardrails {
                let labels = vec![g.name.as_str(), &g.phase, &g.result];
                acc.add("llm_gateway_guardrails_requests_total", labels, 1.0);
            }
        };
        if !rec.tools.is_empty() && rec.attempts.is_empty() {
            // An MCP request (or an agent's tool steps): its calls are counted by the MCP
            // families as they happen; only its guardrail runs are folded in here.
            guardrails(acc);
            return;
        }
        let meta = self.meta(rec);
        let last = rec.attempts.last().map_or("", |a| a.target.as_str());
        let base = [rec.model.as_str(), last, &rec.subject];
        let requests = with_meta([&base[..], &[status]].concat(), &meta);
        acc.add("llm_gateway_requests_total", requests, 1.0);
        let ms = rec.end_ns.saturating_sub(rec.start_ns) as f64 / 1e6;
        let latency = with_meta(base.to_vec(), &meta);
        acc.observe("llm_gateway_request_processing_ms", latency, ms);
        for (at, at_status) in rec.attempts.iter().zip(attempt_status) {
            let labels = with_meta(vec![rec.model.as_str(), &at.target, &rec.subject], &meta);
            let amounts = [
                (
                    "llm_gateway_input_tokens",
                    at.input_tokens.map(|t| t as f64),
                ),
                (
                    "llm_gateway_output_tokens",
                    at.output_tokens.map(|t| t as f64),
                ),
                ("llm_gateway_request_cost", at.cost_usd),
            ];
            for (family, amount) in amounts {
                if let Some(x) = amount.filter(|x| *x != 0.0) {
                    acc.add(family, labels.clone(), x);
                }
            }
            if !at.error_type.is_empty() {
                let failure = vec![labels[0], labels[1], labels[2], at_status, &at.error_type];
                let family = "llm_gateway_request_model_inference_failure";
                acc.add(family, with_meta(failure, &meta), 1.0);
            }
            if let Some(ttft) = at.ttft_ms {
                acc.observe("llm_gateway_first_token_latency_ms", labels.clone(), ttft);
            }
            if let Some(itl) = at.itl_mean_ms {
                acc.observe("llm_gateway_inter_token_latency_ms", labels, itl);
            }
            if !at.fallback_reason.is_empty() {
                let labels = vec![rec.routing_rule.as_str(), &at.target];
                acc.add("llm_gateway_fallback_requests_total", labels, 1.0);
            }
        }
        if !rec.routing_rule.is_empty() && !last.is_empty() {
            let labels = vec![rec.routing_rule.as_str(), last];
            acc.add("llm_gateway_load_balanced_requests_total", labels, 1.0);
        }
        if let Some((rule, result)) = &rec.rate_limit {
            let labels = vec![rule.as_str(), result];
            acc.add("llm_gateway_rate_limit_requests_total", labels, 1.0);
        }
        if let Some((rule, result)) = &rec.budget {
            let labels = vec![rule.as_str(), result];
            acc.add("llm_gateway_budget_requests_total", labels, 1.0);
        }
        guardrails(acc);
        for g in &rec.guardrails {
            acc.guardrail(&g.name, g.result == "error");
        }
    }
}

/// One access-log line: only these fields, so no header, key, prompt or answer (no secret).
/// Zero counts, an empty error and an unknown TTFT are left out.
fn access_line(rec: &Record, out: &mut String) {
    let last = rec.attempts.last();
    let text = |out: &mut String, key: &str, v: &str| {
        push_key(out, key);
        push_json_str(out, v);
    };
    out.push_str("{\"request_id\":");
    push_json_str(out, &rec.request_id);
    text(out, "key_name", &rec.key_name);
    text(out, "subject", &rec.subject);
    text(out, "model", &rec.model);
    text(out, "target", last.map_or("", |a| a.target.as_str()));
    let ms = rec.end_ns.saturating_sub(rec.start_ns) as f64 / 1e6;
    push_int(out, "status", i64::from(rec.status));
    push_float(out, "latency_ms", (ms * 1000.0).round() / 1000.0);
    let input: i64 = rec.attempts.iter().filter_map(|a| a.input_tokens).sum();
    let output: i64 = rec.attempts.iter().filter_map(|a| a.output_tokens).sum();
    let cost: f64 = rec.attempts.iter().filter_map(|a| a.cost_usd).sum();
    if input != 0 {
        push_int(out, "input_tokens", input);
    }
    if output != 0 {
        push_int(out, "output_tokens", output);
    }
    if cost != 0.0 {
        push_float(out, "cost_usd", cost);
    }
    if !rec.attempts.is_empty() {
        push_int(out, "attempts", rec.attempts.len() as i64);
    }
    if let Some(ttft) = last.and_then(|a| a.ttft_ms) {
        push_float(out, "ttft_ms", ttft);
    }
    let error = match (&rec.error_type, last) {
        (e, _) if !e.is_empty() => e.as_str(),
        (_, Some(a)) => a.error_type.as_str(),
        _ => "",
    };
    if !error.is_empty() {
        text(out, "error_type", error);
    }
    out.push('}');
}

/// `,"key":` (keys are ours: nothing to escape).
fn push_key(out: &mut String, key: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
}

fn push_int(out: &mut String, key: &str, v: i64) {
    push_key(out, key);
    out.push_str(itoa::Buffer::new().format(v));
}

fn push_float(out: &mut String, key: &str, v: f64) {
    push_key(out, key);
    match serde_json::Number::from_f64(v) {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
    }
}

fn push_json_str(out: &mut String, s: &str) {
    // Names and ids need no escaping: written as they are, without an allocation.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // Serialising a str cannot fail.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::record::decode_batch_json;

    // Two requests on the same series, the second after a fallback, with guardrail runs.
    const BATCH: &str = r#"[
      ["r1", 1000000, 6000000, "POST", "/v1/chat/completions", 200, "k", "user:a", "chat",
       ["lb"], {"project": "p1"}, "",
       [["acct/a", "openai", "a", 1, 2, 200, "", "a", "id1", 10, 5, ["stop"], null, null,
         null, 0.5, 1, "", null, null, null, false, null, null]],
       "", ["rl", "allowed"], null, "lb",
       [["pii", "input", "pass", 1, 2, []], ["out", "output", "error", 1, 2, []]]],
      ["r2", 0, 2500000, "POST", "/v1/chat/completions", 200, "k", "user:a", "chat",
       ["lb"], {"project": "p2"}, "",
       [["acct/a", "openai", "a", 1, 2, 503, "503", "", "", null, null, [], null, null,
         null, null, 1, "", null, null, null, false, null, null],
        ["acct/b", "openai", "b", 3, 4, 200, "", "b", "id2", 7, 3, ["stop"], 12.5, 2.0,
         3.0, 0.25, 2, "503", null, null, null, true, null, null]],
       "", null, null, "lb",
       [["out", "output", "pass", 1, 2, []]]]
    ]"#;

    fn folded(cap: usize, access: bool) -> Folded {
        let records = decode_batch_json(BATCH.as_bytes()).unwrap();
        let buckets = [
            ("llm_gateway_request_processing_ms", vec![1.0, 5.0, 10.0]),
            ("llm_gateway_first_token_latency_ms", vec![10.0, 12.5, 20.0]),
        ];
        let buckets = buckets
            .map(|(n, b)| (n.to_owned(), b))
            .into_iter()
            .collect();
        RecordFold::new(vec!["project".into()], cap, buckets).fold(&records, access)
    }

    fn counter(f: &Folded, family: &str, labels: &[&str]) -> Option<f64> {
        f.counters
            .iter()
            .find(|(n, l, _)| {
                *n == family && l.iter().map(String::as_str).eq(labels.iter().copied())
            })
            .map(|c| c.2)
    }

    #[test]
    fn a_batch_sums_each_series_once() {
        let f = folded(10, false);
        let req = "llm_gateway_requests_total";
        assert_eq!(
            counter(&f, req, &["chat", "acct/a", "user:a", "200", "p1"]),
            Some(1.0)
        );
        assert_eq!(
            counter(&f, req, &["chat", "acct/b", "user:a", "200", "p2"]),
            Some(1.0)
        );
        let input = "llm_gateway_input_tokens";
        assert_eq!(
            counter(&f, input, &["chat", "acct/a", "user:a", "p1"]),
            Some(10.0)
        );
        assert_eq!(
            counter(&f, input, &["chat", "acct/b", "user:a", "p2"]),
            Some(7.0)
        );
        let fail = "llm_gateway_request_model_inference_failure";
        assert_eq!(
            counter(&f, fail, &["chat", "acct/a", "user:a", "503", "503", "p2"]),
            Some(1.0)
        );
        let fb = "llm_gateway_fallback_requests_total";
        assert_eq!(counter(&f, fb, &["lb", "acct/b"]), Some(1.0));
        let lb = "llm_gateway_load_balanced_requests_total";
        assert_eq!(counter(&f, lb, &["lb", "acct/a"]), Some(1.0));
        assert_eq!(counter(&f, lb, &["lb", "acct/b"]), Some(1.0));
        let g = "llm_gateway_guardrails_requests_total";
        assert_eq!(counter(&f, g, &["out", "output", "error"]), Some(1.0));
        assert_eq!(counter(&f, g, &["out", "output", "pass"]), Some(1.0));
        assert_eq!(
            counter(
                &f,
                "llm_gateway_rate_limit_requests_total",
                &["rl", "allowed"]
            ),
            Some(1.0)
        );
        // Rows: a count per bucket (a value on a bound is in it), +Inf, then the sum.
        let lat = &f.observations[0];
        assert_eq!(lat.0, "llm_gateway_request_processing_ms");
        assert_eq!(lat.2, vec![0.0, 1.0, 0.0, 0.0, 5.0]);
        let ttft = f
            .observations
            .iter()
            .find(|o| o.0 == "llm_gateway_first_token_latency_ms");
        assert_eq!(
            ttft.map(|o| o.2.clone()),
            Some(vec![0.0, 1.0, 0.0, 0.0, 12.5])
        );
        // A family without buckets counts everything under +Inf.
        let itl = f
            .observations
            .iter()
            .find(|o| o.0 == "llm_gateway_inter_token_latency_ms");
        assert_eq!(itl.map(|o| o.2.clone()), Some(vec![1.0, 2.0]));
        // "out" failed, then answered: both changes, in order; "pii" passed throughout.
        let health: Vec<_> = f
            .guardrail_health
            .iter()
            .map(|(n, b)| (n.as_str(), *b))
            .collect();
        assert_eq!(health, [("pii", false), ("out", true), ("out", false)]);
        assert!(f.access_log.is_empty());
    }

    #[test]
    fn a_series_row_counts_each_value_in_the_first_bucket_that_holds_it() {
        let buckets = [("h".to_owned(), vec![1.0, 5.0, 10.0])]
            .into_iter()
            .collect();
        let fold = RecordFold::new(vec![], 10, buckets);
        let row = fold.row("h", &[0.5, 1.0, 1.5, 5.0, 10.0, 10.5, 99.0]);
        assert_eq!(row, vec![2.0, 2.0, 1.0, 2.0, 127.5]);
    }

    #[test]
    fn metadata_values_past_the_cap_are_other() {
        let f = folded(1, false);
        let req = "llm_gateway_requests_total";
        assert_eq!(
            counter(&f, req, &["chat", "acct/b", "user:a", "200", "other"]),
            Some(1.0)
        );
    }

    #[test]
    fn access_lines_leave_out_what_is_unknown() {
        let f = folded(10, true);
        let lines: Vec<Value> = f
            .access_log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            serde_json::json!({"request_id": "r1", "key_name": "k", "subject": "user:a",
                "model": "chat", "target": "acct/a", "status": 200, "latency_ms": 5.0,
                "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.5, "attempts": 1})
        );
        assert_eq!(lines[1]["attempts"], 2);
        assert_eq!(lines[1]["ttft_ms"], 12.5);
        assert_eq!(lines[1]["latency_ms"], 2.5);
        assert!(lines[1].get("error_type").is_none());
    }

    #[test]
    fn access_line_strings_are_escaped_as_json_wants() {
        for s in [
            "plain",
            "quote\"d",
            "back\\slash",
            "line\nbreak",
            "tab\t",
            "é ☃",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        }
    }
}
