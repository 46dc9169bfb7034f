//! OpenAI Responses API streams, metered and forwarded as they are.
//!
//! Every event carries its `type` in the data. Output text and function-call argument deltas
//! are tokens; `response.created` names the response; the terminal `response.completed`,
//! `response.incomplete` or `response.failed` carries the usage and ends the stream (the API
//! sends no `[DONE]`); an `error` event is a provider failure.

use std::borrow::Cow;

use serde::Deserialize;

use crate::sse::{raw_error, Event, Flow, Recorder, StreamError};

#[derive(Deserialize)]
struct ResponsesEvent<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    response: Option<Response<'a>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Response<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<UsageIn>,
    #[serde(borrow, default)]
    incomplete_details: Option<Incomplete<'a>>,
}

#[derive(Deserialize)]
struct Incomplete<'a> {
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
}

/// The Responses API's usage: `input_tokens` includes the cached ones, `output_tokens` the
/// reasoning ones.
#[derive(Deserialize)]
pub(crate) struct UsageIn {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
}

#[derive(Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

pub(crate) fn responses_event(e: &Event<'_>, rec: &mut Recorder, now_ms: f64) -> Flow {
    let Some(data) = e.data else {
        return Flow::Forward;
    };
    if rec.done {
        return Flow::Drop;
    }
    let ev = match crate::json::from_bytes::<ResponsesEvent<'_>>(data) {
        Some(ev) => ev,
        None if e.name == b"error" => return rec.fail(raw_error(data)),
        None => return rec.fail(StreamError::InvalidJson),
    };
    let kind = ev.kind.as_deref().unwrap_or("");
    match kind {
        "response.output_text.delta"
        | "response.refusal.delta"
        | "response.function_call_arguments.delta"
        | "response.reasoning_summary_text.delta" => {
            if let Some(d) = ev.delta.as_deref() {
                rec.token(now_ms, d);
            }
        }
        "response.created" => {
            if let Some(id) = ev.response.as_ref().and_then(|r| r.id.as_deref()) {
                rec.response_id = Some(id.to_owned());
            }
        }
        "response.completed" | "response.incomplete" | "response.failed" => {
            rec.done = true;
            let response = ev.response;
            let reason = match kind {
                "response.completed" => "stop",
                "response.failed" => "error",
                _ => match response
                    .as_ref()
                    .and_then(|r| r.incomplete_details.as_ref())
                    .and_then(|d| d.reason.as_deref())
                {
                    Some("max_output_tokens") => "length",
                    Some("content_filter") => "content_filter",
                    _ => "incomplete",
                },
            };
            rec.finish_reason = Some(reason.to_owned());
            if let Some(u) = response.and_then(|r| r.usage) {
                rec.usage.prompt_tokens = u.input_tokens;
                rec.usage.completion_tokens = u.output_tokens;
                rec.usage.cached_tokens = u.input_tokens_details.and_then(|d| d.cached_tokens);
            }
        }
        "error" => {
            return rec.fail(StreamError::Upstream {
                kind: ev.code.map(Cow::into_owned),
                message: ev
                    .message
                    .map_or_else(|| "unknown error".to_owned(), Cow::into_owned),
            });
        }
        _ => {}
    }
    Flow::Forward
}
