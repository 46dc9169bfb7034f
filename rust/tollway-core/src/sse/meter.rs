//! The stream meter: one per streamed response, fed each upstream chunk as it arrives. It
//! measures the stream (TTFT, inter-token latency, tokens, finish reason, provider usage), finds
//! protocol errors, and returns the bytes the client should get: OpenAI streams as received
//! (less the usage-only chunk when the client did not ask for it), Anthropic streams translated
//! to OpenAI chunks.

use std::borrow::Cow;

use serde::Deserialize;

use super::{
    raw_error, ErrorIn, Event, Flow, Recorder, SseParser, StreamError, Usage, MAX_EVENT_BYTES,
};
use crate::sse::anthropic::AnthropicTranslator;
use crate::sse::bedrock::BedrockTranslator;
use crate::sse::gemini::GeminiTranslator;
use crate::tokens::Encoding;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    OpenAi,
    Anthropic,
    /// Gemini API and Vertex AI `streamGenerateContent?alt=sse`.
    Gemini,
    /// Bedrock ConverseStream's binary event stream (not SSE).
    Bedrock,
}

impl StreamFormat {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "openai" => Some(Self::OpenAi),
            "anthropic" => Some(Self::Anthropic),
            "gemini" => Some(Self::Gemini),
            "bedrock" => Some(Self::Bedrock),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct MeterOptions {
    pub format: StreamFormat,
    /// The model named in translated chunks and used to pick the tokenizer.
    pub model: String,
    /// The time the request started, on the clock of every `now_ms` passed to `feed`.
    pub started_ms: f64,
    /// OpenAI streams: drop the usage-only chunk (the client did not ask for usage).
    pub strip_usage: bool,
    /// Anthropic streams: emit an OpenAI usage chunk before `[DONE]`.
    pub include_usage: bool,
    /// Unix seconds for the `created` field of translated chunks.
    pub created: u64,
}

/// Meters one streamed response; see the module docs. Feed every upstream chunk in order with
/// the time it arrived, then call `finish` once when the upstream body ends.
#[derive(Debug)]
pub struct SseMeter {
    parser: SseParser,
    format: StreamFormat,
    strip_usage: bool,
    encoding: Encoding,
    rec: Recorder,
    anthropic: Option<Box<AnthropicTranslator>>,
    gemini: Option<Box<GeminiTranslator>>,
    bedrock: Option<Box<BedrockTranslator>>,
    out: Vec<u8>,
}

impl SseMeter {
    pub fn new(opts: MeterOptions) -> Self {
        let anthropic = (opts.format == StreamFormat::Anthropic).then(|| {
            Box::new(AnthropicTranslator::new(
                &opts.model,
                opts.created,
                opts.include_usage,
            ))
        });
        let gemini = (opts.format == StreamFormat::Gemini).then(|| {
            Box::new(GeminiTranslator::new(
                &opts.model,
                opts.created,
                opts.include_usage,
            ))
        });
        let bedrock = (opts.format == StreamFormat::Bedrock).then(|| {
            Box::new(BedrockTranslator::new(
                &opts.model,
                opts.created,
                opts.include_usage,
            ))
        });
        Self {
            parser: SseParser::new(MAX_EVENT_BYTES),
            format: opts.format,
            strip_usage: opts.strip_usage,
            encoding: Encoding::for_model(&opts.model),
            rec: Recorder {
                started_ms: opts.started_ms,
                first_token_ms: None,
                last_token_ms: 0.0,
                token_events: 0,
                itl_max_ms: 0.0,
                text: String::new(),
                text_overflow: 0,
                finish_reason: None,
                usage: Usage::default(),
                done: false,
                error: None,
                response_id: None,
            },
            anthropic,
            gemini,
            bedrock,
            out: Vec::new(),
        }
    }

    /// Takes one upstream chunk received at `now_ms`; returns the bytes to send to the client
    /// now (possibly none: a partial event is held back until its end arrives). After an error
    /// nothing more is returned: check [`Self::error`] after each call.
    pub fn feed(&mut self, chunk: &[u8], now_ms: f64) -> &[u8] {
        self.drive(Some(chunk), now_ms);
        &self.out
    }

    /// Ends the stream (the upstream body is over): dispatches a final event that lacked its
    /// blank line and marks a stream that stopped before its finish as truncated. Never
    /// invents an end marker: a cut stream gets no `[DONE]`.
    pub fn finish(&mut self, now_ms: f64) -> &[u8] {
        self.drive(None, now_ms);
        // Gemini and Bedrock may end without an end marker: complete a finished answer.
        if let Some(g) = &mut self.gemini {
            g.end(&mut self.rec, &mut self.out);
        } else if let Some(b) = &mut self.bedrock {
            b.end(&mut self.rec, &mut self.out);
        }
        if !self.rec.done && self.rec.finish_reason.is_none() {
            self.rec.fail(StreamError::Truncated);
        }
        &self.out
    }

    /// Runs the parser over `chunk` (or its end, for `None`) into `self.out`: the parser
    /// forwards raw OpenAI events there, the translator writes Anthropic ones.
    fn drive(&mut self, chunk: Option<&[u8]>, now_ms: f64) {
        let Self {
            parser,
            strip_usage,
            rec,
            anthropic,
            gemini,
            bedrock,
            out,
            ..
        } = self;
        out.clear();
        if let Some(b) = bedrock {
            // Binary frames, not SSE: the translator does its own framing.
            if let Some(c) = chunk {
                b.feed(c, rec, now_ms, out);
            }
            return;
        }
        let mut run = |sink: &mut Vec<u8>, on_event: &mut dyn FnMut(&Event<'_>) -> Flow| match chunk
        {
            Some(c) => parser.feed(c, sink, on_event),
            None => parser.finish(sink, on_event),
        };
        let result = match (anthropic, gemini) {
            (Some(t), _) => run(&mut Vec::new(), &mut |e| t.on_event(e, rec, now_ms, out)),
            (_, Some(t)) => run(&mut Vec::new(), &mut |e| t.on_event(e, rec, now_ms, out)),
            _ => run(out, &mut |e| openai_event(e, rec, now_ms, *strip_usage)),
        };
        if result.is_err() {
            rec.fail(StreamError::EventTooLarge);
        }
    }

    pub fn format(&self) -> StreamFormat {
        self.format
    }

    /// Milliseconds from the start to the first content token.
    pub fn ttft_ms(&self) -> Option<f64> {
        self.rec.first_token_ms.map(|t| t - self.rec.started_ms)
    }

    /// Mean gap between content events: (last - first) / (events - 1).
    pub fn itl_mean_ms(&self) -> Option<f64> {
        let first = self.rec.first_token_ms?;
        (self.rec.token_events > 1)
            .then(|| (self.rec.last_token_ms - first) / (self.rec.token_events - 1) as f64)
    }

    pub fn itl_max_ms(&self) -> Option<f64> {
        (self.rec.token_events > 1).then_some(self.rec.itl_max_ms)
    }

    /// The output text seen so far (the first 4 MiB of it).
    pub fn text(&self) -> &str {
        &self.rec.text
    }

    /// Output tokens: the provider's count when it sent one, else counted locally from the
    /// text seen (tokenizes on each call; read it once, at settle).
    pub fn output_tokens(&self) -> u64 {
        match self.rec.usage.completion_tokens {
            Some(n) => n,
            None => self.encoding.count(&self.rec.text) + (self.rec.text_overflow / 4) as u64,
        }
    }

    /// Prompt tokens as the provider reported them; `None` when it did not (count them with
    /// [`crate::tokens::count_prompt_tokens`] and treat them as estimated).
    pub fn prompt_tokens(&self) -> Option<u64> {
        self.rec.usage.prompt_tokens
    }

    /// True when any part of the usage is not the provider's own count.
    pub fn usage_estimated(&self) -> bool {
        self.rec.usage.completion_tokens.is_none() || self.rec.usage.prompt_tokens.is_none()
    }

    pub fn usage(&self) -> &Usage {
        &self.rec.usage
    }

    /// The finish reason in OpenAI's terms (Anthropic's are mapped).
    pub fn finish_reason(&self) -> Option<&str> {
        self.rec.finish_reason.as_deref()
    }

    /// `[DONE]` (OpenAI) or `message_stop` (Anthropic) arrived.
    pub fn done(&self) -> bool {
        self.rec.done
    }

    pub fn error(&self) -> Option<&StreamError> {
        self.rec.error.as_ref()
    }

    pub fn response_id(&self) -> Option<&str> {
        self.rec.response_id.as_deref()
    }

    /// Bytes held back waiting for the end of an event.
    pub fn pending(&self) -> usize {
        self.parser.pending()
    }
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    usage: Option<UsageIn>,
    #[serde(borrow, default)]
    error: Option<ErrorIn<'a>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(borrow, default)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UsageIn {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

fn openai_event(e: &Event<'_>, rec: &mut Recorder, now_ms: f64, strip_usage: bool) -> Flow {
    let Some(data) = e.data else {
        return Flow::Forward; // comments keep the client's connection warm too
    };
    if rec.done {
        return Flow::Drop;
    }
    if e.name == b"error" {
        #[derive(Deserialize)]
        struct Wrapped<'a> {
            #[serde(borrow)]
            error: ErrorIn<'a>,
        }
        let err = match serde_json::from_slice::<Wrapped<'_>>(data) {
            Ok(w) => w.error.into_error(),
            Err(_) => raw_error(data),
        };
        return rec.fail(err);
    }
    if data == b"[DONE]" {
        rec.done = true;
        return Flow::Forward;
    }
    let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
        return rec.fail(StreamError::InvalidJson);
    };
    if let Some(err) = chunk.error {
        return rec.fail(err.into_error());
    }
    if rec.response_id.is_none() {
        rec.response_id = chunk.id.map(Cow::into_owned);
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
    if let Some(u) = chunk.usage {
        rec.usage = Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
        };
        if no_choices && strip_usage {
            return Flow::Drop;
        }
    }
    Flow::Forward
}
