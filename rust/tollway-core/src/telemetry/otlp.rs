//! Per-request telemetry records in, one OTLP `ExportTraceServiceRequest` per batch out.
//!
//! The request path only queues a compact record; the background exporter hands a whole batch
//! here as one MessagePack array (msgspec, `array_like`), and this decides each request's spans
//! as borrowed descriptions ([`super::spans`]), written as protobuf directly or, for OTLP/JSON,
//! through the official messages (`opentelemetry-proto`).
//! Building the same spans as Python protobuf objects costs ~50 µs per request (measured), more
//! than a third of the whole pass-through; here it is a few µs per batch member.

use super::record::{Attempt, Record};
use super::spans::{delimited, write_len, Attr, SpanOut, Text, Val};
use crate::clock::Rng;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

/// Makes a child of the request's root span: name, kind, start, end, attributes, error.
type Child<'a, 'f> =
    dyn Fn(Text<'a>, SpanKind, u64, u64, Vec<Attr<'a>>, Option<&'a str>) -> SpanOut<'a> + 'f;

/// Resource and scope are built once; ids come from a process-local generator.
pub struct SpanEncoder {
    resource: Resource,
    scope: InstrumentationScope,
    exclude_request_data: bool,
    rng: Rng,
}

/// The `gen_ai.provider.name` for a provider-account kind (OTEL GenAI semconv values).
pub fn genai_provider(provider: &str) -> &str {
    match provider {
        "azure-openai" => "azure.ai.openai",
        "openai-compatible" => "openai",
        "gemini" => "gcp.gemini",
        "vertex" => "gcp.vertex_ai",
        "bedrock" => "aws.bedrock",
        "mistral" => "mistral_ai",
        other => other,
    }
}

/// `00-<trace id>-<parent id>-<flags>` → (trace id, parent span id); anything invalid is ignored,
/// as W3C Trace Context asks, and the request starts a new trace.
pub fn parse_traceparent(s: &str) -> Option<([u8; 16], [u8; 8])> {
    let mut parts = s.trim().split('-');
    let (Some(version), Some(trace), Some(parent), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if version.len() != 2 || version == "ff" || flags.len() != 2 {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace = hex_array::<16>(trace)?;
    let parent = hex_array::<8>(parent)?;
    if trace == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace, parent))
}

fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Attribute lists skip what the record does not know rather than sending zeros.
struct Attrs<'a>(Vec<Attr<'a>>);

impl<'a> Attrs<'a> {
    fn text(&mut self, key: impl Into<Text<'a>>, v: &'a str) {
        if !v.is_empty() {
            self.0.push(Attr::str(key, v));
        }
    }
    fn int(&mut self, key: &'static str, v: Option<i64>) {
        if let Some(v) = v {
            self.0.push(Attr::new(key, Val::Int(v)));
        }
    }
    fn float(&mut self, key: &'static str, v: Option<f64>) {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            self.0.push(Attr::new(key, Val::Double(v)));
        }
    }
    fn strings(&mut self, key: &'static str, items: &'a [String]) {
        if !items.is_empty() {
            self.0.push(Attr::new(key, Val::Strs(items)));
        }
    }
}

/// Prompt and answer attributes keep at most this much text (cut at a character boundary).
const MAX_CONTENT_BYTES: usize = 32 * 1024;

fn bounded(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl SpanEncoder {
    pub fn new(
        service_name: &str,
        resource_attributes: &[(String, String)],
        exclude_request_data: bool,
    ) -> Self {
        let mut attributes = vec![Attr::str("service.name", service_name)];
        attributes.extend(
            resource_attributes
                .iter()
                .filter(|(k, _)| k != "service.name")
                .map(|(k, v)| Attr::str(k.as_str(), v)),
        );
        attributes.push(Attr::str("telemetry.sdk.name", "tollway"));
        attributes.push(Attr::str("telemetry.sdk.language", "rust"));
        Self {
            resource: Resource {
                attributes: attributes.into_iter().map(Attr::to_proto).collect(),
                ..Default::default()
            },
            scope: InstrumentationScope {
                name: "tollway".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ..Default::default()
            },
            exclude_request_data,
            rng: Rng::from_time(),
        }
    }

    fn span_id(&self) -> [u8; 8] {
        // A zero span id is invalid in OTLP.
        self.rng.next_u64().max(1).to_be_bytes()
    }

    /// The spans of one request: a SERVER root, one CLIENT child per upstream attempt, the
    /// policy steps, MCP requests and guardrail runs.
    pub fn spans<'a>(&self, rec: &'a Record, out: &mut Vec<SpanOut<'a>>) {
        let (trace_id, parent) = match parse_traceparent(&rec.traceparent) {
            Some((t, p)) => (t, Some(p)),
            None => {
                let mut t = [0u8; 16];
                t[..8].copy_from_slice(&self.rng.next_u64().to_be_bytes());
                t[8..].copy_from_slice(&self.rng.next_u64().max(1).to_be_bytes());
                (t, None)
            }
        };
        let root_id = self.span_id();
        let child = |name: Text<'a>, kind, start: u64, end: u64, attrs, error| SpanOut {
            trace_id,
            span_id: self.span_id(),
            parent: Some(root_id),
            name,
            kind,
            start,
            end: end.max(start),
            attrs,
            error,
        };
        let mut a = Attrs(Vec::with_capacity(10 + rec.metadata.len()));
        a.text("http.request.method", &rec.method);
        a.text("http.route", &rec.route);
        a.int("http.response.status_code", Some(i64::from(rec.status)));
        a.text("tollway.request_id", &rec.request_id);
        a.text("tollway.key.name", &rec.key_name);
        a.text("tollway.subject", &rec.subject);
        a.text("gen_ai.request.model", &rec.model);
        a.strings("tollway.rule_ids", &rec.rule_ids);
        for (k, v) in &rec.metadata {
            if let Value::String(v) = v {
                a.0.push(Attr::str(Text(["tollway.metadata.", k.as_str(), ""]), v));
            }
        }
        a.text("error.type", &rec.error_type);
        let failed = rec.status >= 500 || !rec.error_type.is_empty() && rec.status == 0;
        out.push(SpanOut {
            trace_id,
            span_id: root_id,
            parent,
            name: Text::spaced(&rec.method, &rec.route),
            kind: SpanKind::Server,
            start: rec.start_ns,
            end: rec.end_ns.max(rec.start_ns),
            attrs: a.0,
            error: failed.then_some(rec.error_type.as_str()),
        });
        // GenAI semconv operation names: `chat` for chat completions, `embeddings` for those.
        let operation = if rec.route.ends_with("/embeddings") {
            "embeddings"
        } else {
            "chat"
        };
        for at in &rec.attempts {
            out.push(child(
                Text::spaced(operation, &at.request_model),
                SpanKind::Client,
                at.start_ns,
                at.end_ns,
                self.attempt_attributes(at, operation),
                (!at.error_type.is_empty()).then_some(at.error_type.as_str()),
            ));
        }
        self.policy_spans(rec, &child, out);
        for t in &rec.tools {
            let with_content = !self.exclude_request_data;
            let id = self.span_id();
            out.push(super::mcp_spans::tool_span(
                t,
                trace_id,
                id,
                root_id,
                with_content,
            ));
        }
        for g in &rec.guardrails {
            let mut a = Attrs(Vec::with_capacity(4));
            a.text("tollway.guardrail.name", &g.name);
            a.text("tollway.guardrail.phase", &g.phase);
            a.text("tollway.guardrail.result", &g.result);
            let categories = g.categories.join(",");
            if !categories.is_empty() {
                let categories = Val::Str(Cow::Owned(categories));
                a.0.push(Attr::new("tollway.guardrail.categories", categories));
            }
            out.push(child(
                Text::spaced("guardrail", &g.name),
                SpanKind::Internal,
                g.start_ns,
                g.end_ns,
                a.0,
                (g.result == "error").then_some("guardrail_error"),
            ));
        }
    }

    /// The policy steps as INTERNAL children of the root (`child` makes one): the rate-limit
    /// and budget decisions and the load-balancing choice (from the request's start to its
    /// first upstream attempt: admission is one call, its own time is microseconds), and one
    /// span per fallback (from the failed attempt's end to the end of the attempt on the next
    /// target).
    fn policy_spans<'a>(&self, rec: &'a Record, child: &Child<'a, '_>, out: &mut Vec<SpanOut<'a>>) {
        let admitted = rec
            .attempts
            .first()
            .map_or(rec.end_ns, |a| a.start_ns)
            .max(rec.start_ns);
        let span = |name, start, end, attrs, failed: bool| {
            let error = failed.then_some("blocked");
            child(name, SpanKind::Internal, start, end, attrs, error)
        };
        for (kind, decision) in [("rate_limit", &rec.rate_limit), ("budget", &rec.budget)] {
            if let Some((rule, result)) = decision {
                let mut a = Attrs(Vec::with_capacity(2));
                a.text(Text(["tollway.", kind, ".rule_id"]), rule);
                a.text(Text(["tollway.", kind, ".result"]), result);
                let name = Text::spaced(kind, rule);
                out.push(span(name, rec.start_ns, admitted, a.0, result == "blocked"));
            }
        }
        if rec.routing_rule.is_empty() {
            return;
        }
        let mut a = Attrs(Vec::with_capacity(3));
        a.text("tollway.load_balancing.rule_id", &rec.routing_rule);
        a.strings("tollway.load_balancing.candidates", &rec.candidates);
        if let Some(first) = rec.attempts.first() {
            a.text("tollway.load_balancing.target", &first.target);
        }
        let name = Text::spaced("load_balance", &rec.routing_rule);
        out.push(span(name, rec.start_ns, admitted, a.0, false));
        for pair in rec.attempts.windows(2) {
            let (prev, at) = (&pair[0], &pair[1]);
            if at.fallback_reason.is_empty() {
                continue; // a retry on the same target, not a fallback
            }
            let mut a = Attrs(Vec::with_capacity(4));
            a.text("tollway.fallback.rule_id", &rec.routing_rule);
            a.text("tollway.fallback.from", &prev.target);
            a.text("tollway.fallback.to", &at.target);
            a.text("tollway.fallback.reason", &at.fallback_reason);
            let name = Text::spaced("fallback", &at.target);
            out.push(span(name, prev.end_ns, at.end_ns, a.0, false));
        }
    }

    fn attempt_attributes<'a>(&self, at: &'a Attempt, operation: &'static str) -> Vec<Attr<'a>> {
        let mut a = Attrs(Vec::with_capacity(24));
        a.text("gen_ai.operation.name", operation);
        a.text("gen_ai.provider.name", genai_provider(&at.provider));
        a.text("gen_ai.request.model", &at.request_model);
        a.text("gen_ai.response.model", &at.response_model);
        a.text("gen_ai.response.id", &at.response_id);
        a.int("gen_ai.usage.input_tokens", at.input_tokens);
        a.int("gen_ai.usage.output_tokens", at.output_tokens);
        a.strings("gen_ai.response.finish_reasons", &at.finish_reasons);
        a.float("gen_ai.request.temperature", at.temperature);
        a.int("gen_ai.request.max_tokens", at.max_tokens);
        a.float("gen_ai.request.top_p", at.top_p);
        a.float(
            "gen_ai.response.time_to_first_chunk",
            at.ttft_ms.map(|ms| ms / 1000.0),
        );
        if at.status != 0 {
            a.int("http.response.status_code", Some(i64::from(at.status)));
        }
        a.text("error.type", &at.error_type);
        a.text("tollway.target", &at.target);
        a.float("tollway.ttft_ms", at.ttft_ms);
        a.float("tollway.itl_ms", at.itl_mean_ms);
        a.float("tollway.itl_max_ms", at.itl_max_ms);
        a.float("tollway.cost_usd", at.cost_usd);
        a.int("tollway.attempt", Some(i64::from(at.attempt)));
        a.text("tollway.fallback_reason", &at.fallback_reason);
        a.0.push(Attr::new("tollway.stream", Val::Bool(at.stream)));
        if at.usage_estimated {
            a.0.push(Attr::new("tollway.usage.estimated", Val::Bool(true)));
        }
        if !self.exclude_request_data {
            if let Some(m) = &at.input_messages {
                a.text("gen_ai.input.messages", bounded(m, MAX_CONTENT_BYTES));
            }
            if let Some(t) = &at.output_text {
                let t = bounded(t, MAX_CONTENT_BYTES);
                let messages = serde_json::json!([{
                    "role": "assistant",
                    "parts": [{"type": "text", "content": t}],
                    "finish_reason": at.finish_reasons.first().map_or("", String::as_str),
                }]);
                let messages = Cow::Owned(messages.to_string());
                a.0.push(Attr::new("gen_ai.output.messages", Val::Str(messages)));
            }
        }
        a.0
    }

    /// One export request for a batch; returns the body and the number of spans in it.
    pub fn encode(&self, records: &[Record], encoding: Encoding) -> (Vec<u8>, usize) {
        if encoding == Encoding::Protobuf {
            return self.encode_protobuf(records);
        }
        let mut spans = Vec::with_capacity(records.len() * 4);
        for rec in records {
            self.spans(rec, &mut spans);
        }
        let n = spans.len();
        let spans = spans.into_iter().map(SpanOut::to_proto).collect();
        // The opentelemetry-proto serde impls follow the OTLP/JSON mapping (hex ids,
        // camelCase, 64-bit integers as strings); serialising these types cannot fail.
        let body = serde_json::to_vec(&self.request(spans)).unwrap_or_default();
        (body, n)
    }

    fn request(&self, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(self.scope.clone()),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// The same bytes as `request(spans).encode_to_vec()` of the spans' `to_proto`, but
    /// each span is written once, straight from its description, into a buffer of the
    /// body's exact size: the batch's spans are described first, so the enclosing frames'
    /// lengths are known before anything is written.
    fn encode_protobuf(&self, records: &[Record]) -> (Vec<u8>, usize) {
        let mut spans = Vec::with_capacity(records.len() * 4);
        for rec in records {
            self.spans(rec, &mut spans);
        }
        (self.write_request(&spans), spans.len())
    }

    fn write_request(&self, spans: &[SpanOut<'_>]) -> Vec<u8> {
        let lens: Vec<usize> = spans.iter().map(SpanOut::encoded_len).collect();
        let mut out = self.frame(lens.iter().map(|&n| delimited(n)).sum());
        for (span, len) in spans.iter().zip(lens) {
            write_len(2, len, &mut out); // ScopeSpans.spans
            span.write_protobuf(&mut out);
        }
        out
    }

    /// The request up to its spans, in a buffer with room for the `span_bytes` that follow
    /// (the spans as `ScopeSpans.spans` fields).
    fn frame(&self, span_bytes: usize) -> Vec<u8> {
        let (scope_len, resource_len) = (self.scope.encoded_len(), self.resource.encoded_len());
        let scope_spans_len = delimited(scope_len) + span_bytes;
        let resource_spans_len = delimited(resource_len) + delimited(scope_spans_len);
        let mut out = Vec::with_capacity(delimited(resource_spans_len));
        write_len(1, resource_spans_len, &mut out); // ExportTraceServiceRequest.resource_spans
        write_len(1, resource_len, &mut out); // ResourceSpans.resource
        self.resource.encode_raw(&mut out);
        write_len(2, scope_spans_len, &mut out); // ResourceSpans.scope_spans
        write_len(1, scope_len, &mut out); // ScopeSpans.scope
        self.scope.encode_raw(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::record::{decode_batch, decode_batch_json};
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue};

    const BATCH: &str = r#"[
      ["req-1", 100, 900, "POST", "/v1/chat/completions", 200, "alice-key", "user:alice",
       "gpt-4o", ["lb-1"], {"env": "prod"},
       "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
       [["acct/gpt-4o", "azure-openai", "gpt-4o", 150, 850, 200, "", "gpt-4o-2024", "cmpl-1",
         12, 40, ["stop"], 25.0, 1.5, 4.0, 0.0012, 1, "", 0.7, 100, null, true,
         "[{\"role\":\"user\",\"content\":\"secret prompt\"}]", "the answer"]],
       "", null, null, "lb-1"]
    ]"#;

    /// A batch meant to reach every branch of the span builders: metadata (a non-string
    /// value, a non-ASCII one), a retry on the same target then a fallback, guardrail runs
    /// (one an error, one at time 0), rate-limit and budget decisions (one blocked), MCP
    /// runs with and without content, an estimated usage, zero values, an invalid
    /// traceparent, an embeddings request and failures without an error type. `LONG` is
    /// replaced by a text longer than the content bound.
    const RICH: &str = r#"[
      ["req-r", 1000, 9000, "POST", "/v1/chat/completions", 200, "k", "user:ü",
       "vm", ["lb", "rl", "bud"], {"env": "prod", "n": 3, "ünï": "välue ✓", "": "x"},
       "00-not-a-traceparent-01",
       [["a/m1", "openai", "m1", 1100, 1500, 503, "503", "", "", null, null, [], null, null,
         null, null, 1, "", null, null, null, false, null, null],
        ["a/m1", "openai", "m1", 1500, 2000, 0, "timeout", "", "", 0, 0, [], 0.0, null,
         null, 0.0, 2, "", 0.0, 0, 1.0, true, "LONG", null],
        ["b/m2", "bedrock", "m2", 2100, 8000, 200, "", "m2-v1", "id-ü", 1200, -1,
         ["stop", "length", ""], 250.5, 12.25, 40.0, 0.125, 3, "503", 0.7, 4096, 0.9, true,
         "[{\"role\":\"user\",\"content\":\"héllo\"}]", "the ánswer\n\"q\"", true]],
       "", ["rl", "allowed"], ["bud", "blocked"], "lb",
       [["pii", "input", "pass", 1010, 1020, []],
        ["tox", "output", "error", 8100, 8200, ["hate", "violence"]],
        ["x", "input", "flagged", 0, 0, [""]]],
       ["a/m1", "b/m2"],
       [["gh", "tools/call", "search", 2000, 3000, "rate_limited", "sess-1", "{\"q\":1}",
         "résult"],
        ["gh", "tools/list", "", 0, 0, "", "", null, null],
        ["", "", "", 5, 4]]],
      ["req-e", 10, 20, "POST", "/v1/embeddings", 502, "", "", "", [], {},
       "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
       [["c/e", "openai", "emb", 12, 18, 502, "", "", "", 7, null, [], null, null, null, null,
         1, "", null, null, null, false, null, "LONG"]],
       "", null, null, ""],
      ["req-0", 0, 0, "GET", "/v1/models", 0, "", "", "", [], {}, "", [],
       "client_disconnect", null, ["b", "allowed"], ""]
    ]"#;

    /// The spans of a record as official messages.
    fn proto_spans(enc: &SpanEncoder, rec: &Record) -> Vec<Span> {
        let mut spans = Vec::new();
        enc.spans(rec, &mut spans);
        spans.into_iter().map(SpanOut::to_proto).collect()
    }

    #[test]
    fn written_protobuf_equals_prosts_encoding_of_the_official_messages() {
        let rich = RICH.replace("LONG", &"é".repeat(20_000));
        let mut records = decode_batch_json(rich.as_bytes()).unwrap();
        records.extend(decode_batch_json(BATCH.as_bytes()).unwrap());
        for exclude in [false, true] {
            let enc = SpanEncoder::new("svc", &[("team".into(), "a".into())], exclude);
            let mut spans = Vec::new();
            for rec in &records {
                enc.spans(rec, &mut spans);
            }
            for (i, s) in spans.iter().enumerate() {
                let mut one = Vec::new();
                s.write_protobuf(&mut one);
                assert_eq!(one.len(), s.encoded_len(), "span {i}");
                assert_eq!(one, s.clone().to_proto().encode_to_vec(), "span {i}: {s:?}");
            }
            let written = enc.write_request(&spans);
            let official: Vec<Span> = spans.into_iter().map(SpanOut::to_proto).collect();
            // The fixture reaches what the writer treats specially.
            let values = || {
                official
                    .iter()
                    .flat_map(|s| &s.attributes)
                    .filter_map(|kv| kv.value.as_ref()?.value.as_ref())
            };
            let long = |v: &any_value::Value| matches!(v, any_value::Value::StringValue(s) if s.len() > 16_384);
            assert_eq!(values().any(long), !exclude);
            assert!(values().any(|v| *v == any_value::Value::IntValue(-1)));
            assert!(values().any(|v| *v == any_value::Value::DoubleValue(0.0)));
            assert!(values().any(|v| *v == any_value::Value::BoolValue(false)));
            assert!(official.iter().any(|s| s.start_time_unix_nano == 0));
            assert!(official.iter().any(|s| s.name.is_empty()));
            let statuses: Vec<&str> = official
                .iter()
                .filter_map(|s| Some(s.status.as_ref()?.message.as_str()))
                .collect();
            assert!(statuses.contains(&"") && statuses.contains(&"blocked"));
            assert_eq!(written, enc.request(official).encode_to_vec());
        }
    }

    #[test]
    fn hand_framed_protobuf_equals_prosts_encoding() {
        let records = decode_batch_json(BATCH.as_bytes()).unwrap_or_default();
        let enc = SpanEncoder::new("svc", &[("team".into(), "a".into())], false);
        let mut spans = Vec::new();
        for rec in records.iter().chain(&records) {
            enc.spans(rec, &mut spans);
        }
        assert!(spans.len() >= 4);
        let written = enc.write_request(&spans);
        let spans = spans.into_iter().map(SpanOut::to_proto).collect();
        assert_eq!(written, enc.request(spans).encode_to_vec());
        let (body, n) = enc.encode(&records, Encoding::Protobuf);
        let decoded = ExportTraceServiceRequest::decode(body.as_slice()).map(|r| r.resource_spans);
        assert_eq!(
            decoded.map(|r| r[0].scope_spans[0].spans.len()).ok(),
            Some(n)
        );
    }

    #[test]
    fn a_msgpack_batch_decodes_as_its_json_twin() {
        // What msgspec writes for an array-like Struct: a MessagePack array per record.
        let value: Value = serde_json::from_str(BATCH).unwrap();
        let packed = rmp_serde::to_vec(&value).unwrap();
        let (from_json, from_msgpack) = (
            decode_batch_json(BATCH.as_bytes()).unwrap(),
            decode_batch(&packed).unwrap(),
        );
        assert_eq!(format!("{from_json:?}"), format!("{from_msgpack:?}"));
        assert!(
            decode_batch(b"\x91\xc1").is_err(),
            "a bad batch is an error, not a panic"
        );
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_request_becomes_a_server_root_and_a_client_child_in_the_callers_trace() {
        let records = decode_batch_json(BATCH.as_bytes()).unwrap();
        let enc = SpanEncoder::new("gw", &[("env".into(), "prod".into())], false);
        let (body, n) = enc.encode(&records, Encoding::Protobuf);
        assert_eq!(n, 3, "root, attempt, load-balancing");
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let rs = &req.resource_spans[0];
        let res = rs.resource.as_ref().unwrap();
        assert_eq!(res.attributes[0].key, "service.name");
        let spans = &rs.scope_spans[0].spans;
        let (root, child) = (&spans[0], &spans[1]);
        assert_eq!(root.kind, SpanKind::Server as i32);
        assert_eq!(hex(&root.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(hex(&root.parent_span_id), "b7ad6b7169203331");
        assert_eq!(child.parent_span_id, root.span_id);
        assert_eq!(child.name, "chat gpt-4o");
        assert_eq!(child.kind, SpanKind::Client as i32);
        assert_eq!(
            attr(child, "gen_ai.provider.name"),
            Some(&any_value::Value::StringValue("azure.ai.openai".into()))
        );
        assert_eq!(
            attr(child, "gen_ai.usage.output_tokens"),
            Some(&any_value::Value::IntValue(40))
        );
        assert_eq!(
            attr(root, "tollway.metadata.env"),
            Some(&any_value::Value::StringValue("prod".into()))
        );
        assert!(attr(child, "gen_ai.input.messages").is_some());
    }

    #[test]
    fn policy_steps_become_children_of_the_root() {
        let batch = r#"[["req-2", 100, 900, "POST", "/v1/chat/completions", 200, "k", "user:a",
          "vm", ["lb", "rl"], {}, "",
          [["a/m1", "openai", "m1", 150, 300, 503, "503", "", "", null, null, [], null, null,
            null, null, 1, "", null, null, null, false, null, null],
           ["b/m2", "openai", "m2", 310, 850, 200, "", "", "", 3, 4, [], null, null,
            null, null, 2, "503", null, null, null, false, null, null]],
          "", ["rl", "allowed"], null, "lb", [], ["a/m1", "b/m2"]]]"#;
        let records = decode_batch_json(batch.as_bytes()).unwrap();
        let spans = proto_spans(&SpanEncoder::new("gw", &[], true), &records[0]);
        let root = &spans[0];
        let named = |prefix: &str| {
            spans
                .iter()
                .find(|s| s.name.starts_with(prefix))
                .unwrap_or_else(|| panic!("{prefix}"))
        };
        let (rl, lb, fb) = (
            named("rate_limit "),
            named("load_balance "),
            named("fallback "),
        );
        for s in [rl, lb, fb] {
            assert_eq!(s.parent_span_id, root.span_id);
            assert_eq!(s.kind, SpanKind::Internal as i32);
        }
        assert_eq!((rl.start_time_unix_nano, rl.end_time_unix_nano), (100, 150));
        assert_eq!(
            attr(lb, "tollway.load_balancing.candidates"),
            Some(&any_value::Value::ArrayValue(ArrayValue {
                values: ["a/m1", "b/m2"]
                    .iter()
                    .map(|t| AnyValue {
                        value: Some(any_value::Value::StringValue((*t).into()))
                    })
                    .collect()
            }))
        );
        assert_eq!(fb.name, "fallback b/m2");
        assert_eq!((fb.start_time_unix_nano, fb.end_time_unix_nano), (300, 850));
        assert_eq!(
            attr(fb, "tollway.fallback.reason"),
            Some(&any_value::Value::StringValue("503".into()))
        );
    }

    #[test]
    fn excluded_request_data_never_reaches_the_wire() {
        let records = decode_batch_json(BATCH.as_bytes()).unwrap();
        let enc = SpanEncoder::new("gw", &[], true);
        for encoding in [Encoding::Protobuf, Encoding::Json] {
            let (body, _) = enc.encode(&records, encoding);
            let s = String::from_utf8_lossy(&body);
            assert!(!s.contains("secret prompt") && !s.contains("the answer"));
        }
    }

    #[test]
    fn an_estimated_usage_is_marked_and_older_records_still_decode() {
        // BATCH has no trailing `usage_estimated`: it decodes as false, with no attribute.
        let enc = SpanEncoder::new("gw", &[], true);
        let records = decode_batch_json(BATCH.as_bytes()).unwrap();
        assert!(!records[0].attempts[0].usage_estimated);
        let marked = BATCH.replace(r#""the answer"]]"#, r#""the answer", true]]"#);
        let records = decode_batch_json(marked.as_bytes()).unwrap();
        let (body, _) = enc.encode(&records, Encoding::Protobuf);
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let child = &req.resource_spans[0].scope_spans[0].spans[1];
        assert_eq!(
            attr(child, "tollway.usage.estimated"),
            Some(&any_value::Value::BoolValue(true))
        );
    }

    #[test]
    fn json_encoding_uses_hex_ids() {
        let records = decode_batch_json(BATCH.as_bytes()).unwrap();
        let (body, _) = SpanEncoder::new("gw", &[], true).encode(&records, Encoding::Json);
        let v: Value = serde_json::from_slice(&body).unwrap();
        let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "0af7651916cd43dd8448eb211c80319c");
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
