//! The stream meter: one per streamed response, fed each upstream chunk as it arrives. It
//! measures the stream (TTFT, inter-token latency, tokens, finish reason, provider usage), finds
//! protocol errors, and returns the bytes the client should get: OpenAI streams as received
//! (less the usage-only chunk when the client did not ask for it), Anthropic streams translated
//! to OpenAI chunks. For clients of the Anthropic Messages API it also translates OpenAI
//! streams to Anthropic events ([`super::to_anthropic`]) and meters Anthropic streams it
//! forwards as they are; Responses API streams ([`super::responses`]) are metered and forwarded.
//! Gemini and Bedrock streams for such clients go through both translations in turn: to OpenAI
//! chunks (where they are metered), then to Anthropic events ([`Relay`]). With output
//! guardrails ([`SseMeter::guard_output`]) every event for the client goes through the guard
//! ([`super::guard`]) in the same call, so a guarded stream is framed once.

use std::sync::Arc;

use super::{
    Event, Flow, Reader, Recorder, SseParser, StreamError, TooLarge, Usage, MAX_EVENT_BYTES,
};
use crate::scrub::RequestScrub;
use crate::sse::anthropic::AnthropicTranslator;
use crate::sse::bedrock::BedrockTranslator;
use crate::sse::gemini::GeminiTranslator;
use crate::sse::guard::OutputGuard;
use crate::sse::openai::{read_openai, record_chunk, OpenAiEvent};
use crate::sse::responses::responses_event;
use crate::sse::to_anthropic::ToAnthropic;
use crate::tokens::Encoding;

/// What the upstream sends and what the client gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    /// OpenAI chat chunks, forwarded.
    OpenAi,
    /// Anthropic Messages events, translated to OpenAI chat chunks.
    Anthropic,
    /// Anthropic Messages events, forwarded (an Anthropic client on an Anthropic target).
    AnthropicRaw,
    /// OpenAI chat chunks, translated to Anthropic Messages events (an Anthropic client on an
    /// OpenAI-shaped target).
    OpenAiToAnthropic,
    /// OpenAI Responses API events, forwarded.
    Responses,
    /// Gemini API and Vertex AI `streamGenerateContent?alt=sse`.
    Gemini,
    /// Bedrock ConverseStream's binary event stream (not SSE).
    Bedrock,
    /// Gemini events translated to OpenAI chunks, then to Anthropic Messages events.
    GeminiToAnthropic,
    /// Bedrock frames translated to OpenAI chunks, then to Anthropic Messages events.
    BedrockToAnthropic,
}

impl StreamFormat {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "openai" => Self::OpenAi,
            "anthropic" => Self::Anthropic,
            "anthropic-raw" => Self::AnthropicRaw,
            "openai-to-anthropic" => Self::OpenAiToAnthropic,
            "responses" => Self::Responses,
            "gemini" => Self::Gemini,
            "bedrock" => Self::Bedrock,
            "gemini-to-anthropic" => Self::GeminiToAnthropic,
            "bedrock-to-anthropic" => Self::BedrockToAnthropic,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::AnthropicRaw => "anthropic-raw",
            Self::OpenAiToAnthropic => "openai-to-anthropic",
            Self::Responses => "responses",
            Self::Gemini => "gemini",
            Self::Bedrock => "bedrock",
            Self::GeminiToAnthropic => "gemini-to-anthropic",
            Self::BedrockToAnthropic => "bedrock-to-anthropic",
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
    to_anthropic: Option<Box<ToAnthropic>>,
    gemini: Option<Box<GeminiTranslator>>,
    bedrock: Option<Box<BedrockTranslator>>,
    /// A Gemini or Bedrock stream for an Anthropic client: their chunks, translated again.
    relay: Option<Box<Relay>>,
    /// Output guardrails on what the client gets ([`super::guard`]), in this same pass.
    guard: Option<Box<OutputGuard>>,
    /// Secrets out of what the client gets, after the guardrails.
    scrub: Option<Arc<RequestScrub>>,
    out: Vec<u8>,
    /// Translated bytes nobody reads (an Anthropic stream metered but forwarded as it is), or
    /// translated events on their way through the guard.
    scratch: Vec<u8>,
}

impl SseMeter {
    pub fn new(opts: MeterOptions) -> Self {
        let anthropic = matches!(
            opts.format,
            StreamFormat::Anthropic | StreamFormat::AnthropicRaw
        )
        .then(|| {
            Box::new(AnthropicTranslator::new(
                &opts.model,
                opts.created,
                opts.include_usage,
            ))
        });
        let to_anthropic = (opts.format == StreamFormat::OpenAiToAnthropic)
            .then(|| Box::new(ToAnthropic::new(&opts.model, true)));
        let relay = matches!(
            opts.format,
            StreamFormat::GeminiToAnthropic | StreamFormat::BedrockToAnthropic
        )
        .then(|| Box::new(Relay::new(&opts.model)));
        // The Anthropic translation reads usage from the meter, not from a usage chunk.
        let include_usage = opts.include_usage && relay.is_none();
        let gemini = matches!(
            opts.format,
            StreamFormat::Gemini | StreamFormat::GeminiToAnthropic
        )
        .then(|| {
            Box::new(GeminiTranslator::new(
                &opts.model,
                opts.created,
                include_usage,
            ))
        });
        let bedrock = matches!(
            opts.format,
            StreamFormat::Bedrock | StreamFormat::BedrockToAnthropic
        )
        .then(|| {
            Box::new(BedrockTranslator::new(
                &opts.model,
                opts.created,
                include_usage,
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
                head: Default::default(),
            },
            anthropic,
            to_anthropic,
            gemini,
            bedrock,
            relay,
            guard: None,
            scrub: None,
            out: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Runs output guardrails on every event the client gets from now on: `feed` and `finish`
    /// return the guarded bytes; after a block they return nothing more ([`Self::halted`]).
    pub fn guard_output(&mut self, guard: OutputGuard) {
        self.guard = Some(Box::new(guard));
    }

    /// Removes every secret of `scrub` from what `feed` and `finish` return, after the output
    /// guardrails (events are handed over whole, so no secret is split between two returns).
    pub fn scrub_output(&mut self, scrub: Arc<RequestScrub>) {
        self.scrub = Some(scrub);
    }

    pub fn output_guard(&self) -> Option<&OutputGuard> {
        self.guard.as_deref()
    }

    /// Nothing more goes to the client: the stream broke or an output guardrail blocked it.
    pub fn halted(&self) -> bool {
        self.rec.error.is_some() || self.guard.as_ref().is_some_and(|g| g.blocked().is_some())
    }

    /// Takes one upstream chunk received at `now_ms`; returns the bytes to send to the client
    /// now (possibly none: a partial event is held back until its end arrives). After an error
    /// nothing more is returned: check [`Self::error`] after each call.
    pub fn feed(&mut self, chunk: &[u8], now_ms: f64) -> &[u8] {
        self.drive(Some(chunk), now_ms);
        self.scrubbed()
    }

    fn scrubbed(&mut self) -> &[u8] {
        if let Some(clean) = self.scrub.as_ref().and_then(|s| s.scrub(&self.out)) {
            self.out = clean;
        }
        &self.out
    }

    /// Ends the stream (the upstream body is over): dispatches a final event that lacked its
    /// blank line and marks a stream that stopped before its finish as truncated. Never
    /// invents an end marker: a cut stream gets no `[DONE]`.
    pub fn finish(&mut self, now_ms: f64) -> &[u8] {
        self.drive(None, now_ms);
        if !self.rec.done && self.rec.finish_reason.is_none() {
            self.rec.fail(StreamError::Truncated);
        }
        self.scrubbed()
    }

    /// Runs the parser over `chunk` (or its end, for `None`) into `self.out`: the parser
    /// forwards raw OpenAI events there (through the guard, when there is one), the translator
    /// writes Anthropic ones.
    fn drive(&mut self, chunk: Option<&[u8]>, now_ms: f64) {
        if self.gemini.is_some() || self.bedrock.is_some() {
            self.drive_cloud(chunk, now_ms);
            self.guard_translated();
            return;
        }
        let Self {
            parser,
            format,
            strip_usage,
            rec,
            anthropic,
            to_anthropic,
            guard,
            out,
            scratch,
            ..
        } = self;
        out.clear();
        // What goes out is about what came in: one allocation, not one per doubling.
        out.reserve(chunk.map_or(0, <[u8]>::len));
        let guard = guard.as_deref_mut();
        let result = match (format, anthropic, to_anthropic) {
            (StreamFormat::AnthropicRaw, Some(t), ..) => {
                forward(parser, chunk, out, guard, &mut |e| {
                    scratch.clear();
                    match t.on_event(e, rec, now_ms, scratch) {
                        Flow::Stop => Flow::Stop,
                        _ if e.data.is_none() => Flow::Forward,
                        // Events after message_stop are dropped, as the translation drops them.
                        _ if rec.done && e.name != b"message_stop" => Flow::Drop,
                        _ => Flow::Forward,
                    }
                })
            }
            (_, Some(t), ..) => parse(parser, chunk, &mut Vec::new(), &mut |e| {
                t.on_event(e, rec, now_ms, out)
            }),
            (_, _, Some(t)) => parse(parser, chunk, &mut Vec::new(), &mut |e| {
                t.on_event(e, rec, now_ms, out)
            }),
            (StreamFormat::Responses, ..) => forward(parser, chunk, out, guard, &mut |e| {
                responses_event(e, rec, now_ms)
            }),
            // Without a guard, an OpenAI stream's token events are read whole where they can be.
            _ => match (guard, chunk) {
                (None, Some(chunk)) => parser.read(
                    chunk,
                    out,
                    &mut OpenAiReader {
                        rec,
                        now_ms,
                        strip_usage: *strip_usage,
                    },
                ),
                (guard, chunk) => forward(parser, chunk, out, guard, &mut |e| {
                    openai_event(e, rec, now_ms, *strip_usage)
                }),
            },
        };
        if result.is_err() {
            rec.fail(StreamError::EventTooLarge);
        }
        if matches!(
            self.format,
            StreamFormat::Anthropic | StreamFormat::OpenAiToAnthropic
        ) {
            self.guard_translated();
        }
    }

    /// The events a translation wrote to `self.out`, through the guard (when there is one).
    fn guard_translated(&mut self) {
        if let Some(g) = self.guard.as_deref_mut() {
            std::mem::swap(&mut self.out, &mut self.scratch);
            self.out.clear();
            g.generated(&self.scratch, &mut self.out);
        }
    }

    /// Gemini and Bedrock: their translator writes OpenAI chunks to the client, or to the
    /// [`Relay`] that turns them into Anthropic events. At the end of the body (`None`) a
    /// finished answer that lacked its end marker is completed.
    fn drive_cloud(&mut self, chunk: Option<&[u8]>, now_ms: f64) {
        let Self {
            parser,
            rec,
            gemini,
            bedrock,
            relay,
            out,
            ..
        } = self;
        out.clear();
        let sink = match relay.as_deref_mut() {
            Some(r) => &mut r.chunks,
            None => &mut *out,
        };
        if let Some(b) = bedrock {
            // Binary frames, not SSE: the translator does its own framing.
            match chunk {
                Some(c) => b.feed(c, rec, now_ms, sink),
                None => b.end(rec, sink),
            }
        } else if let Some(g) = gemini {
            let mut on_event = |e: &Event<'_>| g.on_event(e, rec, now_ms, sink);
            let result = match chunk {
                Some(c) => parser.feed(c, &mut Vec::new(), &mut on_event),
                None => parser.finish(&mut Vec::new(), &mut on_event),
            };
            if result.is_err() {
                rec.fail(StreamError::EventTooLarge);
            } else if chunk.is_none() {
                g.end(rec, sink);
            }
        }
        if let Some(r) = relay {
            r.pass(rec, now_ms, out);
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

/// The second translation of a Gemini or Bedrock stream for an Anthropic client: the OpenAI
/// chunks its translator wrote (already metered) become Anthropic events.
#[derive(Debug)]
struct Relay {
    parser: SseParser,
    to_anthropic: ToAnthropic,
    /// OpenAI chunks written since the last pass.
    chunks: Vec<u8>,
}

impl Relay {
    fn new(model: &str) -> Self {
        Self {
            parser: SseParser::new(MAX_EVENT_BYTES),
            to_anthropic: ToAnthropic::new(model, false),
            chunks: Vec::new(),
        }
    }

    /// Translates the chunks written so far (they are whole events) into `out`.
    fn pass(&mut self, rec: &mut Recorder, now_ms: f64, out: &mut Vec<u8>) {
        if self.chunks.is_empty() {
            return;
        }
        let t = &mut self.to_anthropic;
        let mut on_event = |e: &Event<'_>| t.on_event(e, rec, now_ms, out);
        // Our own events: never over the limit, so the result is always Ok.
        let _ = self
            .parser
            .feed(&self.chunks, &mut Vec::new(), &mut on_event);
        self.chunks.clear();
    }
}

/// Runs the parser over `chunk`, or its end (`None`).
fn parse(
    parser: &mut SseParser,
    chunk: Option<&[u8]>,
    sink: &mut Vec<u8>,
    on_event: &mut dyn FnMut(&Event<'_>) -> Flow,
) -> Result<(), TooLarge> {
    match chunk {
        Some(c) => parser.feed(c, sink, on_event),
        None => parser.finish(sink, on_event),
    }
}

/// Runs the parser with `on_event` deciding each event's fate: those it forwards go to `out`
/// as received, or as the guard has them (the events the parser framed, not framed again).
fn forward(
    parser: &mut SseParser,
    chunk: Option<&[u8]>,
    out: &mut Vec<u8>,
    guard: Option<&mut OutputGuard>,
    on_event: &mut dyn FnMut(&Event<'_>) -> Flow,
) -> Result<(), TooLarge> {
    let Some(g) = guard else {
        return parse(parser, chunk, out, on_event);
    };
    parse(parser, chunk, &mut Vec::new(), &mut |e| match on_event(e) {
        Flow::Forward => {
            g.event(e.name, e.data, e.raw, out);
            Flow::Drop
        }
        flow => flow,
    })
}

/// An OpenAI stream's events, for the parser: a token event of the shape the stream repeats
/// is read whole (see `ChunkHead::token_event`), any other one framed.
struct OpenAiReader<'r> {
    rec: &'r mut Recorder,
    now_ms: f64,
    strip_usage: bool,
}

impl Reader for OpenAiReader<'_> {
    fn event(&mut self, e: &Event<'_>) -> Flow {
        openai_event(e, self.rec, self.now_ms, self.strip_usage)
    }

    fn whole_event(&mut self, bytes: &[u8]) -> Option<usize> {
        // What `openai_event` does with it: not after the end marker; a token chunk has no
        // usage, so it is recorded and forwarded.
        let rec = &mut *self.rec;
        if rec.done {
            return None;
        }
        let (text, chunk, len) = rec.head.token_event(bytes)?;
        // As `record_chunk` records a token chunk: its id (when none is known yet), its text.
        if rec.response_id.is_none() {
            rec.response_id = rec.head.id_in(chunk)?.map(str::to_owned);
        }
        rec.delta(self.now_ms, std::iter::once(text), false);
        Some(len)
    }
}

fn openai_event(e: &Event<'_>, rec: &mut Recorder, now_ms: f64, strip_usage: bool) -> Flow {
    if e.data.is_none() {
        return Flow::Forward; // comments keep the client's connection warm too
    }
    if rec.done {
        return Flow::Drop;
    }
    match read_openai(e, rec) {
        OpenAiEvent::Failed => Flow::Stop,
        OpenAiEvent::Done => {
            rec.done = true;
            Flow::Forward
        }
        OpenAiEvent::Chunk(chunk) => {
            if record_chunk(&chunk, rec, now_ms) && strip_usage {
                Flow::Drop
            } else {
                Flow::Forward
            }
        }
    }
}
