//! OpenAI `chat.completion.chunk` streams translated, as they arrive, into Anthropic Messages
//! stream events, for clients of `POST /v1/messages` routed to an OpenAI-shaped target.
//!
//! The first chunk opens the message (`message_start`); text deltas become a `text` block's
//! `text_delta`s, each new tool call closes the open block and starts a `tool_use` block whose
//! arguments arrive as `input_json_delta`s; the finish reason closes the open block, and the end
//! marker (after the usage chunk the gateway always asks for) gives `message_delta` with the stop
//! reason and usage, then `message_stop`. The chunks are parsed once, by the meter's reader.
//!
//! The same translation serves Gemini and Bedrock targets: their translators write OpenAI
//! chunks (metering as they go), and those chunks are fed here with `record` off, so a stream
//! is metered once and there is one Anthropic translator.

use std::io::Write;

use crate::sse::anthropic::json_str;
use crate::sse::openai::{read_openai, record_chunk, OpenAiEvent};
use crate::sse::{Event, Flow, Recorder};

/// Anthropic's stop reason for an OpenAI finish reason.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    /// A `tool_use` block for the OpenAI tool call of this index.
    Tool(u32),
}

#[derive(Debug)]
pub(crate) struct ToAnthropic {
    /// The model the client asked for, named in `message_start`.
    model: String,
    started: bool,
    /// Index of the next content block.
    blocks: u32,
    open: Open,
    stop_reason: Option<&'static str>,
    /// Chunks are metered here (an OpenAI upstream), not by a provider translator before.
    record: bool,
    /// The end marker was translated: later events are dropped.
    ended: bool,
}

impl ToAnthropic {
    /// `record`: meter the chunks (off when they come from a provider translator that did).
    pub(crate) fn new(model: &str, record: bool) -> Self {
        Self {
            model: model.to_owned(),
            started: false,
            blocks: 0,
            open: Open::None,
            stop_reason: None,
            record,
            ended: false,
        }
    }

    pub(crate) fn on_event(
        &mut self,
        e: &Event<'_>,
        rec: &mut Recorder,
        now_ms: f64,
        out: &mut Vec<u8>,
    ) -> Flow {
        if e.data.is_none() || self.ended {
            return Flow::Drop;
        }
        let chunk = match read_openai(e, rec) {
            OpenAiEvent::Failed => return Flow::Stop,
            OpenAiEvent::Done => {
                rec.done = true;
                self.ended = true;
                self.finish(rec, out);
                return Flow::Drop;
            }
            OpenAiEvent::Chunk(chunk) => chunk,
        };
        if self.record {
            record_chunk(&chunk, rec, now_ms);
        }
        if !self.started {
            self.started = true;
            let id = chunk.id.as_deref().unwrap_or("unknown");
            out.extend_from_slice(
                b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":",
            );
            if id.starts_with("msg_") {
                json_str(out, id);
            } else {
                json_str(out, &format!("msg_{id}"));
            }
            out.extend_from_slice(br#","type":"message","role":"assistant","model":"#);
            json_str(out, &self.model);
            out.extend_from_slice(
                br#","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}}"#,
            );
            out.extend_from_slice(b"\n\n");
        }
        for choice in chunk.choices.iter().flatten() {
            if let Some(d) = &choice.delta {
                for text in [&d.content, &d.refusal].into_iter().flatten() {
                    if !text.is_empty() {
                        self.text(out, text);
                    }
                }
                for call in d.tool_calls.iter().flatten() {
                    let tool = call.index.unwrap_or(0);
                    let f = call.function.as_ref();
                    if self.open != Open::Tool(tool) {
                        self.open_block(out, Open::Tool(tool));
                        let _ = write!(
                            out,
                            "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":{},\"content_block\":{{\"type\":\"tool_use\",\"id\":",
                            self.blocks - 1
                        );
                        json_str(out, call.id.as_deref().unwrap_or(""));
                        out.extend_from_slice(br#","name":"#);
                        json_str(out, f.and_then(|f| f.name.as_deref()).unwrap_or(""));
                        out.extend_from_slice(b",\"input\":{}}}\n\n");
                    }
                    let args = f.and_then(|f| f.arguments.as_deref()).unwrap_or("");
                    if !args.is_empty() {
                        self.delta(out, "input_json_delta", "partial_json", args);
                    }
                }
            }
            if let Some(reason) = choice.finish_reason.as_deref() {
                self.close(out);
                self.stop_reason = Some(stop_reason(reason));
            }
        }
        Flow::Drop
    }

    fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        if self.open != Open::Text {
            self.open_block(out, Open::Text);
            let _ = write!(
                out,
                "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":{},\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n",
                self.blocks - 1
            );
        }
        self.delta(out, "text_delta", "text", text);
    }

    fn delta(&self, out: &mut Vec<u8>, kind: &str, field: &str, value: &str) {
        let _ = write!(
            out,
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{},\"delta\":{{\"type\":\"{kind}\",\"{field}\":",
            self.blocks.saturating_sub(1)
        );
        json_str(out, value);
        out.extend_from_slice(b"}}\n\n");
    }

    /// Closes the open block and makes `next` the open one (its start is written by the caller).
    fn open_block(&mut self, out: &mut Vec<u8>, next: Open) {
        self.close(out);
        self.open = next;
        self.blocks += 1;
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.open != Open::None {
            let _ = write!(
                out,
                "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":{}}}\n\n",
                self.blocks - 1
            );
            self.open = Open::None;
        }
    }

    /// The end marker: closes what is open, then `message_delta` (stop reason and usage; input
    /// tokens here too, as Anthropic's newer streams do, since OpenAI reports them at the end)
    /// and `message_stop`.
    fn finish(&mut self, rec: &Recorder, out: &mut Vec<u8>) {
        self.close(out);
        let reason = self.stop_reason.unwrap_or("end_turn");
        let u = &rec.usage;
        let cached = u.cached_tokens.unwrap_or(0);
        let written = u.cache_creation_tokens.unwrap_or(0);
        let input = u
            .prompt_tokens
            .unwrap_or(0)
            .saturating_sub(cached + written);
        let _ = write!(
            out,
            "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{reason}\",\"stop_sequence\":null}},\"usage\":{{\"input_tokens\":{input},\"cache_creation_input_tokens\":{written},\"cache_read_input_tokens\":{cached},\"output_tokens\":{}}}}}\n\n",
            u.completion_tokens.unwrap_or(0)
        );
        out.extend_from_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    }
}
