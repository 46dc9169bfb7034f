//! Anthropic Messages stream events translated, as they arrive, into OpenAI
//! `chat.completion.chunk` events, so clients only ever speak the OpenAI API.
//!
//! `message_start` gives the assistant role chunk, text deltas content chunks, `tool_use` blocks
//! and their `input_json_delta`s tool-call chunks, `message_delta` the finish chunk, and
//! `message_stop` the usage chunk (when asked for) and `data: [DONE]`.

use std::borrow::Cow;
use std::io::Write;

use serde::Deserialize;

use crate::sse::{raw_error, ErrorIn, Recorder, StreamError};
use crate::sse::{Event, Flow};

/// OpenAI's finish reason for an Anthropic stop reason.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    }
}

#[derive(Debug)]
pub(crate) struct AnthropicTranslator {
    model: String,
    created: u64,
    include_usage: bool,
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,"choices":[`,
    /// built once when the message id is known.
    prefix: Vec<u8>,
    /// The OpenAI tool-call index of each Anthropic content block that is a `tool_use`.
    tools: Vec<(u32, u32)>,
}

// Everything any Anthropic stream event carries, flattened: each event type fills its part.
#[derive(Deserialize)]
struct AnthropicEvent<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    message: Option<Message<'a>>,
    #[serde(default)]
    index: Option<u32>,
    #[serde(borrow, default)]
    content_block: Option<Block<'a>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    usage: Option<UsageIn>,
    #[serde(borrow, default)]
    error: Option<ErrorIn<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<UsageIn>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UsageIn {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

const CHOICE_END: &[u8] = b",\"logprobs\":null,\"finish_reason\":null}]}\n\n";

impl AnthropicTranslator {
    pub(crate) fn new(model: &str, created: u64, include_usage: bool) -> Self {
        Self {
            model: model.to_owned(),
            created,
            include_usage,
            prefix: Vec::new(),
            tools: Vec::new(),
        }
    }

    pub(crate) fn on_event(
        &mut self,
        e: &Event<'_>,
        rec: &mut Recorder,
        now_ms: f64,
        out: &mut Vec<u8>,
    ) -> Flow {
        let Some(data) = e.data else {
            return Flow::Drop;
        };
        if rec.done {
            return Flow::Drop;
        }
        let ev = match crate::json::from_bytes::<AnthropicEvent<'_>>(data) {
            Some(ev) => ev,
            None if e.name == b"error" => return rec.fail(raw_error(data)),
            None => return rec.fail(StreamError::InvalidJson),
        };
        match ev.kind.as_ref() {
            "message_start" => {
                let message = ev.message.unwrap_or(Message {
                    id: None,
                    usage: None,
                });
                self.start(message.id.as_deref());
                if let Some(u) = message.usage {
                    let cached = u.cache_read_input_tokens;
                    rec.usage.prompt_tokens = u.input_tokens.map(|n| {
                        n + cached.unwrap_or(0) + u.cache_creation_input_tokens.unwrap_or(0)
                    });
                    rec.usage.cached_tokens = cached;
                    rec.usage.cache_creation_tokens = u.cache_creation_input_tokens;
                }
                rec.response_id = message.id.map(Cow::into_owned);
                self.chunk(out, br#"{"role":"assistant","content":""}"#);
            }
            "content_block_start" => match ev.content_block {
                Some(b) if b.kind == "tool_use" => {
                    let tool = self.tools.len() as u32;
                    self.tools.push((ev.index.unwrap_or(0), tool));
                    let name = b.name.as_deref().unwrap_or("");
                    rec.token(now_ms, name);
                    let mut delta = Vec::with_capacity(128);
                    let _ = write!(delta, r#"{{"tool_calls":[{{"index":{tool},"id":"#);
                    json_str(&mut delta, b.id.as_deref().unwrap_or(""));
                    delta.extend_from_slice(br#","type":"function","function":{"name":"#);
                    json_str(&mut delta, name);
                    delta.extend_from_slice(br#","arguments":""}}]}"#);
                    self.chunk(out, &delta);
                }
                Some(b) if b.kind == "text" => {
                    if let Some(text) = b.text.as_deref().filter(|t| !t.is_empty()) {
                        self.content(rec, now_ms, out, text);
                    }
                }
                _ => {} // thinking and other block kinds have no OpenAI chunk
            },
            "content_block_delta" => {
                let Some(d) = ev.delta else {
                    return Flow::Drop;
                };
                if let Some(text) = d.text.as_deref().filter(|t| !t.is_empty()) {
                    self.content(rec, now_ms, out, text);
                } else if let Some(json) = d.partial_json.as_deref().filter(|t| !t.is_empty()) {
                    let index = ev.index.unwrap_or(0);
                    let Some(&(_, tool)) = self.tools.iter().find(|(b, _)| *b == index) else {
                        return Flow::Drop;
                    };
                    rec.token(now_ms, json);
                    let mut delta = Vec::with_capacity(json.len() + 64);
                    let _ = write!(
                        delta,
                        r#"{{"tool_calls":[{{"index":{tool},"function":{{"arguments":"#
                    );
                    json_str(&mut delta, json);
                    delta.extend_from_slice(b"}}]}");
                    self.chunk(out, &delta);
                }
            }
            "message_delta" => {
                if let Some(u) = ev.usage {
                    if u.output_tokens.is_some() {
                        rec.usage.completion_tokens = u.output_tokens;
                    }
                    // Some models report input tokens here rather than in message_start.
                    if let Some(n) = u.input_tokens {
                        rec.usage.prompt_tokens = Some(n);
                    }
                }
                if let Some(reason) = ev.delta.and_then(|d| d.stop_reason) {
                    let mapped = finish_reason(&reason);
                    rec.finish_reason = Some(mapped.to_owned());
                    self.start(None);
                    out.extend_from_slice(&self.prefix);
                    out.extend_from_slice(
                        br#"{"index":0,"delta":{},"logprobs":null,"finish_reason":""#,
                    );
                    out.extend_from_slice(mapped.as_bytes());
                    out.extend_from_slice(b"\"}]}\n\n");
                }
            }
            "message_stop" => {
                rec.done = true;
                if self.include_usage {
                    self.usage_chunk(rec, out);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            "error" => {
                return rec.fail(match ev.error {
                    Some(err) => err.into_error(),
                    None => raw_error(data),
                });
            }
            _ => {} // ping, content_block_stop, and event types added later
        }
        Flow::Drop
    }

    /// Builds the per-message chunk prefix once (at `message_start`, or at the first chunk of
    /// a stream that skipped it).
    fn start(&mut self, id: Option<&str>) {
        if !self.prefix.is_empty() {
            return;
        }
        let p = &mut self.prefix;
        p.extend_from_slice(b"data: {\"id\":");
        json_str(p, id.unwrap_or("msg_unknown"));
        let _ = write!(
            p,
            r#","object":"chat.completion.chunk","created":{},"model":"#,
            self.created
        );
        json_str(p, &self.model);
        p.extend_from_slice(br#","choices":["#);
    }

    fn content(&mut self, rec: &mut Recorder, now_ms: f64, out: &mut Vec<u8>, text: &str) {
        rec.token(now_ms, text);
        let mut delta = Vec::with_capacity(text.len() + 16);
        delta.extend_from_slice(br#"{"content":"#);
        json_str(&mut delta, text);
        delta.push(b'}');
        self.chunk(out, &delta);
    }

    /// One chunk with `delta` (a JSON object) as choice 0's delta.
    fn chunk(&mut self, out: &mut Vec<u8>, delta: &[u8]) {
        self.start(None);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(br#"{"index":0,"delta":"#);
        out.extend_from_slice(delta);
        out.extend_from_slice(CHOICE_END);
    }

    fn usage_chunk(&mut self, rec: &Recorder, out: &mut Vec<u8>) {
        self.start(None);
        let prompt = rec.usage.prompt_tokens.unwrap_or(0);
        let completion = rec.usage.completion_tokens.unwrap_or(0);
        out.extend_from_slice(&self.prefix);
        let _ = write!(
            out,
            r#"],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}"#,
            prompt + completion
        );
        if let Some(cached) = rec.usage.cached_tokens {
            let _ = write!(
                out,
                r#","prompt_tokens_details":{{"cached_tokens":{cached}}}"#
            );
        }
        if let Some(written) = rec.usage.cache_creation_tokens {
            let _ = write!(out, r#","cache_creation_input_tokens":{written}"#);
        }
        out.extend_from_slice(b"}}\n\n");
    }
}

pub(crate) fn json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}
