//! Reading OpenAI `chat.completion.chunk` events: shared by the meter (which forwards them) and
//! the translation to Anthropic events (which rewrites them), so each chunk is parsed once.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;

use super::scan::{index_of, plain_run, Scanner};
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
    let Some(mut chunk) = parse_chunk(data, &mut rec.head) else {
        rec.fail(StreamError::InvalidJson);
        return OpenAiEvent::Failed;
    };
    if let Some(err) = chunk.error.take() {
        rec.fail(err.into_error());
        return OpenAiEvent::Failed;
    }
    OpenAiEvent::Chunk(chunk)
}

/// A chunk's data read, or None when it is not UTF-8 JSON of a chunk's shape. `head` is the
/// stream's: what its last chunk read directly began with.
pub(crate) fn parse_chunk<'a>(data: &'a [u8], head: &mut ChunkHead) -> Option<Chunk<'a>> {
    if let Some(chunk) = head.token_chunk(data) {
        return Some(chunk);
    }
    let text = std::str::from_utf8(data).ok()?;
    scan_chunk(text, head).or_else(|| serde_json::from_str(text).ok())
}

/// The head of a stream's last chunk read directly: its bytes up to the value of `choices`,
/// and what the fields among them held. A stream repeats one head in every chunk (id, object,
/// created, model, fingerprint): a chunk that starts with the same bytes is read from its
/// `choices` on, in the state that reading those bytes left, which reading them again would
/// leave too.
#[derive(Debug, Default)]
pub(crate) struct ChunkHead {
    bytes: Vec<u8>,
    /// The head's `id`: absent, `null`, or where its text is (unescaped).
    id: Option<Option<Range<usize>>>,
    usage: bool,
    error: bool,
    /// The last token chunk read directly, when it had this head: its bytes after the head
    /// around its one text, split at `token_at` (the text's opening quote is before it, its
    /// closing quote starts the rest). A chunk that is the same bytes around another text
    /// without escapes reads the same, with that text: one choice, its delta's `content`.
    token: Vec<u8>,
    token_at: usize,
    /// Neither the head nor the token bytes hold a line break: a token chunk on one `data:`
    /// line is its whole event.
    one_line: bool,
}

/// What a chunk's fields held where `choices`' value starts: the cursor, `id`, `usage`, `error`.
type BeforeChoices<'a> = (usize, Option<Option<Cow<'a, str>>>, bool, bool);

impl ChunkHead {
    /// The fields read in the head, as slices of `text` (which starts with the head's bytes).
    #[allow(clippy::type_complexity)]
    fn fields<'a>(
        &self,
        text: &'a str,
    ) -> Option<(Option<Option<Cow<'a, str>>>, Option<()>, Option<()>)> {
        let id = match &self.id {
            Some(Some(at)) => Some(Some(Cow::Borrowed(text.get(at.clone())?))),
            Some(None) => Some(None),
            None => None,
        };
        Some((id, self.usage.then_some(()), self.error.then_some(())))
    }

    /// A token chunk of the kept shape (see `token`), read without a scan; None for any other.
    fn token_chunk<'a>(&self, data: &'a [u8]) -> Option<Chunk<'a>> {
        let (content, len) = self.token_at_start(data)?;
        if len != data.len() {
            return None;
        }
        let delta = Delta {
            content: Some(Cow::Borrowed(content)),
            refusal: None,
            reasoning_content: None,
            tool_calls: None,
        };
        Some(Chunk {
            id: self.id_in(data)?.map(Cow::Borrowed),
            choices: Some(vec![Choice {
                delta: Some(delta),
                finish_reason: None,
            }]),
            usage: None,
            error: None,
        })
    }

    /// The event at the start of `bytes` when it is `data: ` and a token chunk of the kept
    /// shape, then a blank line: the chunk's text, the chunk (for [`Self::id_in`]), and the
    /// event's length.
    pub(crate) fn token_event<'a>(&self, bytes: &'a [u8]) -> Option<(&'a str, &'a [u8], usize)> {
        if !self.one_line {
            return None;
        }
        let data = bytes.strip_prefix(b"data: ")?;
        let (content, len) = self.token_at_start(data)?;
        let chunk = data.get(..len)?;
        (data.get(len..len + 2)? == b"\n\n").then_some((content, chunk, 6 + len + 2))
    }

    /// The id of a chunk with this head (None when it has none). Its bytes were checked as
    /// UTF-8 with the head's, but a `str` is made by checking.
    pub(crate) fn id_in<'a>(&self, data: &'a [u8]) -> Option<Option<&'a str>> {
        match &self.id {
            Some(Some(at)) => Some(Some(std::str::from_utf8(data.get(at.clone())?).ok()?)),
            _ => Some(None),
        }
    }

    /// The text of the token chunk of the kept shape that `data` starts with, and the chunk's
    /// length.
    fn token_at_start<'a>(&self, data: &'a [u8]) -> Option<(&'a str, usize)> {
        if self.token.is_empty() {
            return None;
        }
        let rest = data.strip_prefix(self.bytes.as_slice())?;
        let (before, after) = self.token.split_at(self.token_at);
        let rest = rest.strip_prefix(before)?;
        // The text runs to its closing quote: no escape, no control character.
        let end = plain_run(rest, 0);
        if !rest.get(end..)?.starts_with(after) {
            return None;
        }
        // Only the text is new to the UTF-8 check: the rest are the bytes of a chunk read.
        let content = std::str::from_utf8(rest.get(..end)?).ok()?;
        Some((content, data.len() - rest.len() + end + after.len()))
    }

    /// Keeps the shape of `chunk` (read directly from `text`, which has the kept head) when it
    /// is a token chunk: one choice, its delta's one text `content`, plain, and nothing else
    /// read.
    fn remember_token(&mut self, text: &str, chunk: &Chunk<'_>) {
        self.token.clear();
        // The id must be the head's (an id after the choices is in the bytes kept, but a
        // token chunk is read with the head's).
        if self.id.is_none() && chunk.id.is_some() {
            return;
        }
        let [Choice {
            delta: Some(d),
            finish_reason: None,
        }] = chunk.choices.as_deref().unwrap_or_default()
        else {
            return;
        };
        let (Some(Cow::Borrowed(t)), None, None, None) =
            (&d.content, &d.refusal, &d.reasoning_content, &d.tool_calls)
        else {
            return;
        };
        let start = offset_in(text, t);
        let b = text.as_bytes();
        let (Some(before), Some(after)) =
            (b.get(self.bytes.len()..start), b.get(start + t.len()..))
        else {
            return;
        };
        // Only a text its own run would end at: the next byte its closing quote.
        if plain_run(b, start) != start + t.len() || after.first() != Some(&b'"') {
            return;
        }
        self.token.extend_from_slice(before);
        self.token.extend_from_slice(after);
        self.token_at = before.len();
        let line_break = |b: &[u8]| memchr::memchr2(b'\n', b'\r', b).is_some();
        self.one_line = !line_break(&self.bytes) && !line_break(&self.token);
    }

    /// Keeps the head of `text`, read directly, for the chunks after it.
    fn remember(&mut self, text: &str, (at, id, usage, error): BeforeChoices<'_>) {
        self.bytes.clear();
        self.token.clear();
        self.id = match id {
            Some(Some(Cow::Borrowed(t))) => {
                let start = offset_in(text, t);
                Some(Some(start..start + t.len()))
            }
            // An escaped id is decoded text, not a slice: such a head is not kept.
            Some(Some(Cow::Owned(_))) => return,
            Some(None) => Some(None),
            None => None,
        };
        (self.usage, self.error) = (usage, error);
        self.bytes
            .extend_from_slice(text.as_bytes().get(..at).unwrap_or_default());
    }
}

/// Where `part` (a slice of `text`, as the scanner's unescaped strings are) starts in `text`.
fn offset_in(text: &str, part: &str) -> usize {
    (part.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize)
}

// The keys of a chunk, a choice and a delta in the order OpenAI sends them: the fast path
// compares a key with each in turn, and names the ones it reads by their index.
const CHUNK_KEYS: [&[u8]; 8] = [
    b"id",
    b"object",
    b"created",
    b"model",
    b"system_fingerprint",
    b"choices",
    b"usage",
    b"error",
];
const ID: usize = index_of(&CHUNK_KEYS, b"id");
const CHOICES: usize = index_of(&CHUNK_KEYS, b"choices");
const USAGE: usize = index_of(&CHUNK_KEYS, b"usage");
const ERROR: usize = index_of(&CHUNK_KEYS, b"error");
const CHOICE_KEYS: [&[u8]; 4] = [b"index", b"delta", b"logprobs", b"finish_reason"];
const DELTA: usize = index_of(&CHOICE_KEYS, b"delta");
const FINISH_REASON: usize = index_of(&CHOICE_KEYS, b"finish_reason");
const DELTA_KEYS: [&[u8]; 5] = [
    b"role",
    b"content",
    b"refusal",
    b"reasoning_content",
    b"tool_calls",
];
const CONTENT: usize = index_of(&DELTA_KEYS, b"content");
const REFUSAL: usize = index_of(&DELTA_KEYS, b"refusal");
const REASONING: usize = index_of(&DELTA_KEYS, b"reasoning_content");
const TOOL_CALLS: usize = index_of(&DELTA_KEYS, b"tool_calls");

/// The common chunk read directly (see `scan`): strings, nulls and choices with text deltas,
/// other keys skipped. None for anything else (usage, an error, tool calls, a field seen twice,
/// which serde refuses, bad JSON...): serde_json reads it, or refuses it.
fn scan_chunk<'a>(text: &'a str, head: &mut ChunkHead) -> Option<Chunk<'a>> {
    let hit = !head.bytes.is_empty() && text.as_bytes().starts_with(&head.bytes);
    // Some once read (as serde's derive tracks fields): a field read twice gives None.
    let (mut id, mut usage, mut error) = match hit {
        true => head.fields(text)?,
        false => (None, None, None),
    };
    let mut choices = None;
    let mut before_choices = None;
    let field = |s: &mut Scanner<'a>, key| match key {
        Some(ID) => once(&mut id, s.string_or_null()?),
        Some(CHOICES) => {
            before_choices = Some((s.at(), id.clone(), usage.is_some(), error.is_some()));
            once(&mut choices, s.nullable(scan_choices)?)
        }
        Some(USAGE) => once(&mut usage, s.null()?),
        Some(ERROR) => once(&mut error, s.null()?),
        _ => s.skip(),
    };
    // A chunk with the kept head is read from its `choices` value on.
    let (mut s, at_value) = match hit {
        true => (Scanner::resume(text, head.bytes.len()), Some(Some(CHOICES))),
        false => (Scanner::new(text), None),
    };
    s.fields_from(at_value, &CHUNK_KEYS, field)?;
    if !s.at_end() {
        return None;
    }
    if let (false, Some(before)) = (hit, before_choices) {
        head.remember(text, before);
    }
    let chunk = Chunk {
        id: id.flatten(),
        choices: choices.flatten(),
        usage: None,
        error: None,
    };
    if !head.bytes.is_empty() && text.as_bytes().starts_with(&head.bytes) {
        head.remember_token(text, &chunk);
    }
    Some(chunk)
}

/// Sets a field read for the first time; None when it was read already.
#[inline(always)]
fn once<T>(field: &mut Option<T>, value: T) -> Option<()> {
    if field.is_some() {
        return None;
    }
    *field = Some(value);
    Some(())
}

#[inline(always)]
fn scan_choices<'a>(s: &mut Scanner<'a>) -> Option<Vec<Choice<'a>>> {
    let mut choices = Vec::with_capacity(1);
    s.array(|s| {
        let (mut delta, mut finish_reason) = (None, None);
        s.fields(&CHOICE_KEYS, |s, key| match key {
            Some(DELTA) => once(&mut delta, s.nullable(scan_delta)?),
            Some(FINISH_REASON) => once(&mut finish_reason, s.string_or_null()?),
            _ => s.skip(),
        })?;
        choices.push(Choice {
            delta: delta.flatten(),
            finish_reason: finish_reason.flatten(),
        });
        Some(())
    })?;
    Some(choices)
}

#[inline(always)]
fn scan_delta<'a>(s: &mut Scanner<'a>) -> Option<Delta<'a>> {
    let (mut content, mut refusal, mut reasoning, mut tool_calls) = (None, None, None, None);
    s.fields(&DELTA_KEYS, |s, key| match key {
        Some(CONTENT) => once(&mut content, s.string_or_null()?),
        Some(REFUSAL) => once(&mut refusal, s.string_or_null()?),
        Some(REASONING) => once(&mut reasoning, s.string_or_null()?),
        Some(TOOL_CALLS) => once(&mut tool_calls, s.null()?),
        _ => s.skip(),
    })?;
    Some(Delta {
        content: content.flatten(),
        refusal: refusal.flatten(),
        reasoning_content: reasoning.flatten(),
        tool_calls: None,
    })
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
            let has_call = d.tool_calls.as_ref().is_some_and(|c| !c.is_empty());
            rec.delta(now_ms, texts.chain(calls), has_call);
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
