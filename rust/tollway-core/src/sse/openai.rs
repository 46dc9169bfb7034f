//! Reading OpenAI `chat.completion.chunk` events: shared by the meter (which forwards them) and
//! the translation to Anthropic events (which rewrites them), so each chunk is parsed once.

use std::borrow::Cow;

use serde::Deserialize;

use super::{raw_error, ErrorIn, Event, Recorder, StreamError, Usage};

#[derive(Deserialize)]
pub(crate) struct Chunk<'a> {
    #[serde(borrow, default)]
    pub(crate) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    usage: Option<UsageIn>,
    #[serde(borrow, default)]
    error: Option<ErrorIn<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct Choice<'a> {
    #[serde(borrow, default)]
    pub(crate) delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    pub(crate) finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(crate) struct Delta<'a> {
    #[serde(borrow, default)]
    pub(crate) content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
pub(crate) struct ToolCallDelta<'a> {
    #[serde(default)]
    pub(crate) index: Option<u32>,
    #[serde(borrow, default)]
    pub(crate) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    pub(crate) name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UsageIn {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    /// Not OpenAI's: set by gateways (and ours) that translate Anthropic usage.
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// One OpenAI stream event with data, read: the end marker, a chunk, or a failure (recorded).
pub(crate) enum OpenAiEvent<'a> {
    Done,
    Chunk(Chunk<'a>),
    Failed,
}

/// Parses an OpenAI event that has data; an error event or bad JSON is recorded as failed.
pub(crate) fn read_openai<'a>(e: &Event<'a>, rec: &mut Recorder) -> OpenAiEvent<'a> {
    let data = e.data.unwrap_or_default();
    if e.name == b"error" {
        #[derive(Deserialize)]
        struct Wrapped<'a> {
            #[serde(borrow)]
            error: ErrorIn<'a>,
        }
        let err = match crate::json::from_bytes::<Wrapped<'_>>(data) {
            Some(w) => w.error.into_error(),
            None => raw_error(data),
        };
        rec.fail(err);
        return OpenAiEvent::Failed;
    }
    if data == b"[DONE]" {
        return OpenAiEvent::Done;
    }
    let Some(mut chunk) = crate::json::from_bytes::<Chunk<'a>>(data) else {
        rec.fail(StreamError::InvalidJson);
        return OpenAiEvent::Failed;
    };
    if let Some(err) = chunk.error.take() {
        rec.fail(err.into_error());
        return OpenAiEvent::Failed;
    }
    OpenAiEvent::Chunk(chunk)
}

/// Records what a chunk shows (tokens, finish reason, usage); true for a usage-only chunk.
pub(crate) fn record_chunk(chunk: &Chunk<'_>, rec: &mut Recorder, now_ms: f64) -> bool {
    if rec.response_id.is_none() {
        rec.response_id = chunk.id.as_deref().map(str::to_owned);
    }
    let mut no_choices = true;
    for choice in chunk.choices.iter().flatten() {
        no_choices = false;
        if let Some(d) = &choice.delta {
            // One token event per delta, its text pushed piece by piece: no allocation.
            let texts = [&d.content, &d.refusal, &d.reasoning_content];
            let texts = texts.into_iter().flatten().map(|t| t.as_ref());
            let calls = d
                .tool_calls
                .iter()
                .flatten()
                .filter_map(|c| c.function.as_ref());
            let calls = calls.flat_map(|f| {
                [
                    f.name.as_deref().unwrap_or(""),
                    f.arguments.as_deref().unwrap_or(""),
                ]
            });
            let mut first = true;
            let has_call = d.tool_calls.as_ref().is_some_and(|c| !c.is_empty());
            for part in texts.chain(calls) {
                if first && (!part.is_empty() || has_call) {
                    first = false;
                    rec.token(now_ms, part);
                } else {
                    rec.push_text(part);
                }
            }
        }
        if let Some(r) = &choice.finish_reason {
            rec.finish_reason = Some(r.clone().into_owned());
        }
    }
    if let Some(u) = &chunk.usage {
        rec.usage = Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: u
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
            cache_creation_tokens: u.cache_creation_input_tokens,
        };
        return no_choices;
    }
    false
}

#[cfg(test)]
#[path = "openai_tests.rs"]
mod tests;
