//! Bedrock ConverseStream answers: the binary `application/vnd.amazon.eventstream` body
//! decoded frame by frame (AWS's `aws-smithy-eventstream`, prelude and message CRCs checked)
//! and each event translated, as it arrives, into OpenAI `chat.completion.chunk` events.
//!
//! `messageStart` gives the role chunk, `contentBlockDelta` text and tool-input chunks,
//! `contentBlockStart` with `toolUse` a tool-call chunk, `messageStop` the finish chunk, and
//! `metadata` (the last event) the usage chunk and `[DONE]`. Exception frames
//! (`throttlingException`, ...) end the stream with an error. The gateway's JSON-mode tool
//! ([`JSON_TOOL`]) is not a tool call: its input is the answer, streamed as content.
//!
//! Each frame's prelude (its length and the CRC of that length) is checked as soon as its 12
//! bytes arrive: the decoder checks it only once the whole frame is in, so a corrupted length
//! would otherwise leave the stream waiting for bytes that never come (found by fuzzing: a
//! final `metadata` frame with a changed length byte passed as a finished answer).

use std::borrow::Cow;

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue, Message};
use bytes::{Buf, BytesMut};
use serde::Deserialize;

use crate::sse::chunks::ChunkWriter;
use crate::sse::{Recorder, StreamError, MAX_EVENT_BYTES};

/// The tool the gateway forces for OpenAI's `response_format` (JSON mode): its input is the
/// answer. The same name as `tollway.providers.bedrock.JSON_TOOL`.
pub const JSON_TOOL: &str = "tollway_json_answer";

/// OpenAI's finish reason for a Bedrock `stopReason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop", // end_turn, stop_sequence
    }
}

#[derive(Debug)]
pub(crate) struct BedrockTranslator {
    writer: ChunkWriter,
    decoder: MessageFrameDecoder,
    buf: BytesMut,
    /// The prelude at the start of `buf` was checked (the decoder then takes it from `buf`).
    prelude_checked: bool,
    /// The OpenAI tool-call index of each content block that is a tool use.
    tools: Vec<(u32, u32)>,
    /// The content block that is the JSON-mode tool's input: the answer's text.
    json_block: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventIn<'a> {
    #[serde(default)]
    content_block_index: Option<u32>,
    #[serde(borrow, default)]
    start: Option<Start<'a>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<UsageIn>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Start<'a> {
    #[serde(borrow, default)]
    tool_use: Option<ToolStart<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolStart<'a> {
    #[serde(borrow, default)]
    tool_use_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Delta<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_use: Option<ToolDelta<'a>>,
    #[serde(borrow, default)]
    reasoning_content: Option<ToolDelta<'a>>,
}

/// `{"input": "..."}` of a tool-use delta; `{"text": "..."}` of a reasoning delta.
#[derive(Deserialize)]
struct ToolDelta<'a> {
    #[serde(borrow, default)]
    input: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageIn {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_write_input_tokens: Option<u64>,
}

/// A frame's prelude: total length, headers length, CRC-32 of those 8 bytes.
const PRELUDE_BYTES: usize = 12;

/// A frame's length is sane and its prelude CRC matches.
fn check_prelude(prelude: &[u8]) -> Result<(), StreamError> {
    let word = |at: usize| {
        let mut w = [0; 4];
        w.copy_from_slice(&prelude[at..at + 4]);
        u32::from_be_bytes(w)
    };
    if crc32fast::hash(&prelude[..8]) != word(8) {
        return Err(StreamError::InvalidJson);
    }
    match word(0) as usize {
        // Prelude and message CRC are 16 bytes: no frame is shorter.
        n if n < PRELUDE_BYTES + 4 => Err(StreamError::InvalidJson),
        n if n > MAX_EVENT_BYTES => Err(StreamError::EventTooLarge),
        _ => Ok(()),
    }
}

fn header<'m>(m: &'m Message, name: &str) -> Option<&'m str> {
    m.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            HeaderValue::String(s) => Some(s.as_str()),
            _ => None,
        })
}

impl BedrockTranslator {
    pub(crate) fn new(model: &str, created: u64, include_usage: bool) -> Self {
        Self {
            writer: ChunkWriter::new(model, created, include_usage),
            decoder: MessageFrameDecoder::new(),
            buf: BytesMut::new(),
            prelude_checked: false,
            tools: Vec::new(),
            json_block: None,
        }
    }

    /// Decodes every whole frame of `chunk` (with what earlier chunks left) into `out`.
    pub(crate) fn feed(
        &mut self,
        chunk: &[u8],
        rec: &mut Recorder,
        now_ms: f64,
        out: &mut Vec<u8>,
    ) {
        // After the end, bytes are ignored as SSE streams ignore events after `[DONE]`
        // (found by fuzzing: trailing garbage turned a delivered answer into a broken one).
        if rec.error.is_some() || rec.done {
            return;
        }
        self.buf.extend_from_slice(chunk);
        while rec.error.is_none() && !rec.done {
            if !self.prelude_checked && self.buf.len() >= PRELUDE_BYTES {
                if let Err(e) = check_prelude(&self.buf[..PRELUDE_BYTES]) {
                    rec.fail(e);
                    break;
                }
                self.prelude_checked = true;
            }
            match self.decoder.decode_frame(&mut self.buf) {
                Ok(DecodedFrame::Complete(m)) => {
                    self.prelude_checked = false;
                    self.on_message(&m, rec, now_ms, out);
                }
                Ok(DecodedFrame::Incomplete) => break,
                Err(_) => {
                    rec.fail(StreamError::InvalidJson);
                }
            }
        }
        if self.buf.remaining() > MAX_EVENT_BYTES {
            rec.fail(StreamError::EventTooLarge);
        }
        if rec.error.is_some() {
            self.buf = BytesMut::new();
        }
    }

    /// The body ended: a stream that stopped without its `metadata` event still completes
    /// once it had a finish (usage is then counted locally).
    pub(crate) fn end(&mut self, rec: &mut Recorder, out: &mut Vec<u8>) {
        if !rec.done && rec.error.is_none() && rec.finish_reason.is_some() {
            self.writer.done(rec, out);
        }
    }

    fn on_message(&mut self, m: &Message, rec: &mut Recorder, now_ms: f64, out: &mut Vec<u8>) {
        if rec.done {
            return;
        }
        let payload = m.payload().as_ref();
        match header(m, ":message-type").unwrap_or("event") {
            "event" => {}
            "exception" => {
                let kind = header(m, ":exception-type").unwrap_or("exception");
                let message = crate::json::from_bytes::<EventIn<'_>>(payload)
                    .and_then(|e| e.message.map(Cow::into_owned));
                rec.fail(StreamError::Upstream {
                    kind: Some(kind.to_owned()),
                    message: message.unwrap_or_else(|| "unknown error".to_owned()),
                });
                return;
            }
            _ => {
                let kind = header(m, ":error-code").map(str::to_owned);
                let message = header(m, ":error-message").unwrap_or("unknown error");
                rec.fail(StreamError::Upstream {
                    kind,
                    message: message.to_owned(),
                });
                return;
            }
        }
        let Some(ev) = crate::json::from_bytes::<EventIn<'_>>(payload) else {
            rec.fail(StreamError::InvalidJson);
            return;
        };
        let w = &mut self.writer;
        match header(m, ":event-type").unwrap_or("") {
            "messageStart" => w.role(out),
            "contentBlockStart" => {
                if let Some(tool) = ev.start.and_then(|s| s.tool_use) {
                    if tool.name.as_deref() == Some(JSON_TOOL) {
                        self.json_block = ev.content_block_index.or(Some(0));
                        return;
                    }
                    let id = tool.tool_use_id.as_deref().unwrap_or("");
                    let name = tool.name.as_deref().unwrap_or("");
                    let index = w.tool_call(rec, now_ms, out, id, name, "");
                    self.tools
                        .push((ev.content_block_index.unwrap_or(0), index));
                }
            }
            "contentBlockDelta" => {
                let Some(d) = ev.delta else { return };
                if let Some(text) = d.text.as_deref().filter(|t| !t.is_empty()) {
                    w.content(rec, now_ms, out, text);
                } else if let Some(input) = d.tool_use.and_then(|t| t.input) {
                    let block = ev.content_block_index.unwrap_or(0);
                    if self.json_block == Some(block) {
                        if !input.is_empty() {
                            w.content(rec, now_ms, out, &input);
                        }
                    } else if let Some(&(_, index)) = self.tools.iter().find(|(b, _)| *b == block) {
                        w.tool_arguments(rec, now_ms, out, index, &input);
                    }
                } else if let Some(text) = d.reasoning_content.and_then(|r| r.text) {
                    rec.push_text(&text); // counted, not shown
                }
            }
            "messageStop" => {
                let reason = ev.stop_reason.as_deref().unwrap_or("end_turn");
                let reason = match finish_reason(reason) {
                    // Only the JSON-mode tool was called: a finished answer.
                    "tool_calls" if w.tool_calls == 0 && self.json_block.is_some() => "stop",
                    mapped => mapped,
                };
                w.finish(rec, out, reason);
            }
            "metadata" => {
                if let Some(u) = ev.usage {
                    let cached = u.cache_read_input_tokens;
                    rec.usage.prompt_tokens = u
                        .input_tokens
                        .map(|n| n + cached.unwrap_or(0) + u.cache_write_input_tokens.unwrap_or(0));
                    rec.usage.completion_tokens = u.output_tokens;
                    rec.usage.cached_tokens = cached;
                    // Priced at the cache-write rate, as for Anthropic targets.
                    rec.usage.cache_creation_tokens = u.cache_write_input_tokens;
                }
                if rec.finish_reason.is_some() {
                    w.done(rec, out);
                }
            }
            _ => {} // contentBlockStop, and event types added later
        }
    }
}
