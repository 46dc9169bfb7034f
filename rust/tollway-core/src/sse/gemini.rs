//! Gemini `streamGenerateContent?alt=sse` events (Gemini API and Vertex AI) translated, as they
//! arrive, into OpenAI `chat.completion.chunk` events.
//!
//! Each event is a whole `GenerateContentResponse`: text parts become content chunks (thought
//! parts are counted, not shown), `functionCall` parts whole tool-call chunks, `finishReason`
//! (or a blocked prompt) the finish chunk, and the latest `usageMetadata` the usage. Gemini has
//! no end marker: the usage chunk and `[DONE]` are written when the body ends after a finish.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use crate::sse::chunks::ChunkWriter;
use crate::sse::{raw_error, Event, Flow, Recorder, StreamError};

/// OpenAI's finish reason for a Gemini `finishReason`; `tools` when the answer called a tool.
pub fn finish_reason(reason: &str, tools: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ if tools => "tool_calls",
        _ => "stop", // STOP, OTHER, MALFORMED_FUNCTION_CALL, and reasons added later
    }
}

#[derive(Debug)]
pub(crate) struct GeminiTranslator {
    writer: ChunkWriter,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    #[serde(borrow, default)]
    candidates: Option<Vec<Candidate<'a>>>,
    #[serde(default)]
    usage_metadata: Option<UsageIn>,
    #[serde(borrow, default)]
    prompt_feedback: Option<Feedback<'a>>,
    #[serde(borrow, default)]
    response_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<GoogleError<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    parts: Option<Vec<Part<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(borrow, default)]
    function_call: Option<FunctionCall<'a>>,
}

#[derive(Deserialize)]
struct FunctionCall<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Feedback<'a> {
    #[serde(borrow, default)]
    block_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageIn {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
    #[serde(default)]
    tool_use_prompt_token_count: Option<u64>,
}

#[derive(Deserialize)]
struct GoogleError<'a> {
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

impl GeminiTranslator {
    pub(crate) fn new(model: &str, created: u64, include_usage: bool) -> Self {
        Self {
            writer: ChunkWriter::new(model, created, include_usage),
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
        if rec.done || rec.finish_reason.is_some() && data.trim_ascii().is_empty() {
            return Flow::Drop;
        }
        let Some(resp) = crate::json::from_bytes::<Response<'_>>(data) else {
            return rec.fail(if e.name == b"error" {
                raw_error(data)
            } else {
                StreamError::InvalidJson
            });
        };
        if let Some(err) = resp.error {
            return rec.fail(StreamError::Upstream {
                kind: err.status.map(Cow::into_owned),
                message: err
                    .message
                    .map_or_else(|| "unknown error".to_owned(), Cow::into_owned),
            });
        }
        let w = &mut self.writer;
        if rec.response_id.is_none() {
            if let Some(id) = &resp.response_id {
                rec.response_id = Some(id.clone().into_owned());
            }
        }
        w.start(resp.response_id.as_deref());
        w.role(out);
        if let Some(u) = resp.usage_metadata {
            let thoughts = u.thoughts_token_count.unwrap_or(0);
            if let Some(p) = u.prompt_token_count {
                rec.usage.prompt_tokens = Some(p + u.tool_use_prompt_token_count.unwrap_or(0));
            }
            if u.candidates_token_count.is_some() || u.thoughts_token_count.is_some() {
                rec.usage.completion_tokens =
                    Some(u.candidates_token_count.unwrap_or(0) + thoughts);
            }
            rec.usage.cached_tokens = u.cached_content_token_count;
            w.reasoning_tokens = u.thoughts_token_count;
        }
        let mut finish = None;
        for c in resp.candidates.into_iter().flatten() {
            if c.index.unwrap_or(0) != 0 {
                continue; // one choice: the gateway asks for one candidate
            }
            for part in c.content.and_then(|c| c.parts).into_iter().flatten() {
                if let Some(call) = part.function_call {
                    let args = call.args.map_or_else(|| "{}".to_owned(), |a| a.to_string());
                    let id = call
                        .id
                        .map_or_else(|| format!("call_{}", w.tool_calls + 1), Cow::into_owned);
                    let name = call.name.as_deref().unwrap_or("");
                    w.tool_call(rec, now_ms, out, &id, name, &args);
                } else if let Some(text) = part.text.as_deref().filter(|t| !t.is_empty()) {
                    if part.thought == Some(true) {
                        rec.push_text(text); // counted, but not part of the answer
                    } else {
                        w.content(rec, now_ms, out, text);
                    }
                }
            }
            finish = c.finish_reason.or(finish);
        }
        let blocked = resp.prompt_feedback.and_then(|f| f.block_reason).is_some();
        if rec.finish_reason.is_none() {
            if let Some(reason) = finish {
                let mapped = finish_reason(&reason, w.tool_calls > 0);
                w.finish(rec, out, mapped);
            } else if blocked {
                w.finish(rec, out, "content_filter");
            }
        }
        Flow::Drop
    }

    /// The body ended: a stream that finished gets its usage chunk and `[DONE]`.
    pub(crate) fn end(&mut self, rec: &mut Recorder, out: &mut Vec<u8>) {
        if !rec.done && rec.error.is_none() && rec.finish_reason.is_some() {
            self.writer.done(rec, out);
        }
    }
}
