//! Output guardrails over a stream, in the meter's own pass: every event the meter forwards
//! (as its parser framed it) or writes (when it translates) goes through [`OutputGuard`]
//! before the client gets it, so a guarded stream is framed and decoded once, in the core.
//!
//! Text is read where each client API keeps it: chat chunks' `choices[].delta.content`,
//! Anthropic Messages `content_block_delta` text deltas, Responses API
//! `response.output_text.delta` events (and again whole in the `...done` and final events,
//! which are redacted whole). Mutate redacts the deltas as they pass ([`StreamRedactor`]),
//! holding back only what a pattern could still need; the held-back text goes out as one more
//! delta before its choice (at its finish reason or `[DONE]`), block (`content_block_stop`) or
//! part (`response.output_text.done`) ends. Validate scans each delta with the last [`TAIL`]
//! characters before it, never the whole answer again; a blocking verdict drops that event and
//! everything after it (the caller ends the stream with an error event).
//!
//! A rewritten event is the one received with only its text changed (the JSON string spliced
//! in place), so everything else reaches the client byte for byte.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use memchr::{memchr, memmem};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::guardrails::{GuardrailId, GuardrailSet, Outcome, Scanner, StreamRedactor};
use crate::sse::anthropic::json_str;

/// Characters before a delta scanned with it, so a finding up to this long that spans deltas
/// is found (pii, secrets and regex findings, and prompt-injection phrases, are far shorter).
pub const TAIL: usize = 1024;

/// Whose text a delta continues: a chat choice (its index), an Anthropic content block (its
/// index) or a Responses output part (output index, content index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Choice(u64),
    Block(u64),
    Part(u64, u64),
}

/// The validate guardrail that stopped the stream and the categories it found (never text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub guardrail: GuardrailId,
    pub categories: Vec<String>,
}

/// What validation keeps of one text: its last [`TAIL`] characters and, per validator, the
/// prompt-injection phrases found so far (a score is over the whole answer's phrases).
struct Watch {
    key: Key,
    tail: String,
    phrases: Vec<Vec<Arc<str>>>,
}

/// The output guardrails of one streamed answer; see the module docs. One per stream.
pub struct OutputGuard {
    set: Arc<GuardrailSet>,
    mutate: Vec<GuardrailId>,
    /// Text-scanning validators only (webhooks see whole answers, never streams).
    validate: Vec<GuardrailId>,
    /// Open redactors, in the order their texts began.
    redactors: Vec<(Key, StreamRedactor)>,
    watches: Vec<Watch>,
    /// Categories redacted by the redactors finished so far.
    redacted: Vec<Arc<str>>,
    blocked: Option<Blocked>,
}

impl fmt::Debug for OutputGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputGuard")
            .field("mutate", &self.mutate)
            .field("validate", &self.validate)
            .field("open", &self.redactors.len())
            .field("blocked", &self.blocked)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ChatIn<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<ChoiceIn<'a>>>,
}

#[derive(Deserialize)]
struct ChoiceIn<'a> {
    #[serde(default)]
    index: Option<Value>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<TextIn<'a>>,
}

/// A chat delta (`content`) or an Anthropic text delta (`type`, `text`).
#[derive(Deserialize)]
struct TextIn<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

/// An Anthropic `content_block_*` event or a Responses API event: the fields read here.
#[derive(Deserialize)]
struct EventIn<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    index: Option<Value>,
    #[serde(default)]
    output_index: Option<Value>,
    #[serde(default)]
    content_index: Option<Value>,
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
}

fn index(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).unwrap_or(0)
}

/// A raw JSON value's text when it is a string.
fn string(raw: &RawValue) -> Option<String> {
    let s = raw.get();
    if !s.starts_with('"') {
        return None;
    }
    serde_json::from_str(s).ok()
}

/// Where `raw` (parsed out of `data`) lies in `data`.
fn span(data: &[u8], raw: &RawValue) -> Option<(usize, usize)> {
    let start = (raw.get().as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
    let end = start + raw.get().len();
    (end <= data.len()).then_some((start, end))
}

/// `name` and `data` as one event.
fn write_event(name: &[u8], data: &[u8], out: &mut Vec<u8>) {
    if !name.is_empty() {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name);
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

/// The event again with each `(span, text)` of `edits` (in order) replaced by the JSON string.
fn spliced(name: &[u8], data: &[u8], edits: &[((usize, usize), String)], out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(data.len() + 32);
    let mut at = 0;
    for ((start, end), text) in edits {
        body.extend_from_slice(&data[at..*start]);
        json_str(&mut body, text);
        at = *end;
    }
    body.extend_from_slice(&data[at..]);
    write_event(name, &body, out);
}

/// The texts of an answer, for the Responses events that repeat it whole: chat
/// `choices[].message.content`, Responses `output_text` parts of `output[]` items.
fn answer_texts(answer: &mut Value, each: &mut dyn FnMut(&mut Value)) {
    if let Some(choices) = answer.get_mut("choices").and_then(Value::as_array_mut) {
        for c in choices {
            if let Some(content) = c.get_mut("message").and_then(|m| m.get_mut("content")) {
                if content.is_string() {
                    each(content);
                }
            }
        }
    }
    let items = answer.get_mut("output").and_then(Value::as_array_mut);
    for item in items.into_iter().flatten() {
        let parts = item.get_mut("content").and_then(Value::as_array_mut);
        for part in parts.into_iter().flatten() {
            if part.get("type").and_then(Value::as_str) == Some("output_text") {
                if let Some(text) = part.get_mut("text").filter(|t| t.is_string()) {
                    each(text);
                }
            }
        }
    }
}

impl OutputGuard {
    /// Redacts with the pii/secrets/regex guardrails of `mutate` and validates with the
    /// text-scanning guardrails of `validate` (others are skipped).
    pub fn new(set: Arc<GuardrailSet>, mutate: Vec<GuardrailId>, validate: &[GuardrailId]) -> Self {
        let validate = validate
            .iter()
            .copied()
            .filter(|&id| {
                set.get(id).is_some_and(|g| {
                    matches!(g.scanner, Scanner::Patterns(_) | Scanner::Injection(_))
                })
            })
            .collect();
        Self {
            set,
            mutate,
            validate,
            redactors: Vec::new(),
            watches: Vec::new(),
            redacted: Vec::new(),
            blocked: None,
        }
    }

    /// The verdict that stopped the stream, if one did.
    pub fn blocked(&self) -> Option<&Blocked> {
        self.blocked.as_ref()
    }

    /// Categories redacted in the texts that ended so far, in order (with repeats).
    pub fn redacted(&self) -> &[Arc<str>] {
        &self.redacted
    }

    /// One event for the client (`raw` as framed, `name` and `data` its fields): appends what
    /// the client gets instead, which is nothing once a validator blocked.
    pub fn event(&mut self, name: &[u8], data: Option<&[u8]>, raw: &[u8], out: &mut Vec<u8>) {
        if self.blocked.is_some() {
            return;
        }
        let mark = out.len();
        let written = match data {
            Some(b"[DONE]") if name.is_empty() => {
                self.flush_choices(out);
                false
            }
            Some(d) if name.is_empty() && d.first() == Some(&b'{') => self.chat(d, out),
            Some(d) if name.starts_with(b"content_block_") => self.anthropic(name, d, out),
            Some(d) if name.starts_with(b"response.") => self.responses(name, d, out),
            _ => false,
        };
        if self.blocked.is_some() {
            out.truncate(mark);
        } else if !written {
            out.extend_from_slice(raw);
        }
    }

    /// The events the meter wrote itself (a translation): whole, each `event: ` and `data: `
    /// one line, ended by a blank line.
    pub fn generated(&mut self, events: &[u8], out: &mut Vec<u8>) {
        let mut rest = events;
        while !rest.is_empty() && self.blocked.is_none() {
            let end = memmem::find(rest, b"\n\n").map_or(rest.len(), |i| i + 2);
            let (raw, next) = rest.split_at(end);
            rest = next;
            let block = raw.strip_suffix(b"\n\n").unwrap_or(raw);
            let (name, fields) = match block.strip_prefix(b"event: ") {
                Some(b) => match memchr(b'\n', b) {
                    Some(i) => (&b[..i], &b[i + 1..]),
                    None => (b, &b""[..]),
                },
                None => (&b""[..], block),
            };
            self.event(name, fields.strip_prefix(b"data: "), raw, out);
        }
    }

    /// A chat chunk; true when it was written (rewritten, or dropped as unreadable).
    fn chat(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(chunk) = crate::json::from_bytes::<ChatIn<'_>>(data) else {
            return true; // text the guard cannot read does not reach the client
        };
        let mut edits = Vec::new();
        for choice in chunk.choices.iter().flatten() {
            let i = index(choice.index.as_ref());
            if choice
                .finish_reason
                .as_deref()
                .is_some_and(|r| !r.is_empty())
            {
                // Held-back text goes out before the choice ends.
                self.flush(Key::Choice(i), out);
            }
            let raw = choice.delta.as_ref().and_then(|d| d.content);
            let Some((raw, text)) = raw.and_then(|r| Some((r, string(r)?))) else {
                continue;
            };
            if text.is_empty() {
                continue;
            }
            if self.check(Key::Choice(i), &text) {
                return true;
            }
            if !self.mutate.is_empty() {
                let redacted = self.redact(Key::Choice(i), &text);
                if redacted != text {
                    let Some(at) = span(data, raw) else {
                        return true;
                    };
                    edits.push((at, redacted));
                }
            }
        }
        if edits.is_empty() {
            return false;
        }
        spliced(b"", data, &edits, out);
        true
    }

    /// An Anthropic `content_block_*` event: a text block's deltas as chat deltas; what the
    /// redactor holds goes out before the block stops.
    fn anthropic(&mut self, name: &[u8], data: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(ev) = crate::json::from_bytes::<EventIn<'_>>(data) else {
            return true;
        };
        let key = Key::Block(index(ev.index.as_ref()));
        match ev.kind.as_deref() {
            Some("content_block_stop") if !self.mutate.is_empty() => {
                let rest = self.rest(key);
                if !rest.is_empty() {
                    let _ = std::io::Write::write_fmt(
                        out,
                        format_args!(
                            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{},\"delta\":{{\"type\":\"text_delta\",\"text\":",
                            index(ev.index.as_ref())
                        ),
                    );
                    json_str(out, &rest);
                    out.extend_from_slice(b"}}\n\n");
                }
                false
            }
            Some("content_block_delta") => {
                let Some(delta) = ev.delta else {
                    return false;
                };
                // The delta is a slice of `data`, so its text's span is too.
                let Ok(delta) = serde_json::from_str::<TextIn<'_>>(delta.get()) else {
                    return true;
                };
                if delta.kind.as_deref() != Some("text_delta") {
                    return false;
                }
                let Some((raw, text)) = delta.text.and_then(|r| Some((r, string(r)?))) else {
                    return false;
                };
                self.delta(key, name, data, raw, &text, out)
            }
            _ => false,
        }
    }

    /// A text delta of an Anthropic block or a Responses part: validated, then redacted.
    fn delta(
        &mut self,
        key: Key,
        name: &[u8],
        data: &[u8],
        raw: &RawValue,
        text: &str,
        out: &mut Vec<u8>,
    ) -> bool {
        if self.check(key, text) {
            return true;
        }
        if self.mutate.is_empty() {
            return false;
        }
        let redacted = self.redact(key, text);
        if redacted == text {
            return false;
        }
        // Not found (never): the event is dropped, never sent unredacted.
        if let Some(at) = span(data, raw) {
            spliced(name, data, &[(at, redacted)], out);
        }
        true
    }

    /// A Responses API event: text deltas as chat deltas; the events that repeat the whole
    /// text are redacted whole.
    fn responses(&mut self, name: &[u8], data: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(ev) = crate::json::from_bytes::<EventIn<'_>>(data) else {
            return true;
        };
        let key = Key::Part(
            index(ev.output_index.as_ref()),
            index(ev.content_index.as_ref()),
        );
        let kind = ev.kind.as_deref().unwrap_or("");
        if kind == "response.output_text.delta" {
            if let Some((raw, text)) = ev.delta.and_then(|r| Some((r, string(r)?))) {
                return self.delta(key, name, data, raw, &text, out);
            }
        }
        if self.mutate.is_empty()
            || !matches!(
                kind,
                "response.output_text.done"
                    | "response.content_part.done"
                    | "response.output_item.done"
                    | "response.completed"
                    | "response.incomplete"
                    | "response.failed"
            )
        {
            return false;
        }
        let Some(mut body) = crate::json::from_bytes::<Value>(data) else {
            return true;
        };
        let mutate = &self.mutate;
        let set = &self.set;
        let mut changed = false;
        let mut redact = |v: &mut Value| {
            if let Some(text) = v.as_str() {
                let (redacted, found) = set.redact(mutate, text);
                if !found.is_empty() {
                    *v = Value::String(redacted);
                    changed = true;
                }
            }
        };
        match kind {
            "response.output_text.done" => {
                let Some(text) = body.get_mut("text").filter(|t| t.is_string()) else {
                    return false;
                };
                redact(text);
                let rest = self.rest(key);
                if !rest.is_empty() {
                    // What the redactor held back, before the text is declared done.
                    let mut delta = Map::new();
                    for k in ["item_id", "output_index", "content_index"] {
                        delta.insert(k.into(), body.get(k).cloned().unwrap_or(Value::Null));
                    }
                    delta.insert("type".into(), "response.output_text.delta".into());
                    delta.insert("delta".into(), rest.into());
                    delta.insert("logprobs".into(), Value::Array(Vec::new()));
                    let seq = body.get("sequence_number").cloned();
                    delta.insert("sequence_number".into(), seq.unwrap_or(Value::Null));
                    let delta = serde_json::to_vec(&delta).unwrap_or_default();
                    write_event(b"response.output_text.delta", &delta, out);
                }
            }
            "response.content_part.done" => {
                if let Some(text) = body.get_mut("part").and_then(|p| p.get_mut("text")) {
                    redact(text);
                }
            }
            "response.output_item.done" => {
                if let Some(item) = body.get_mut("item") {
                    let mut answer = Value::Object(Map::new());
                    answer["output"] = Value::Array(vec![item.take()]);
                    answer_texts(&mut answer, &mut redact);
                    if let Some(back) = answer["output"].get_mut(0) {
                        *item = back.take();
                    }
                }
            }
            _ => {
                if let Some(response) = body.get_mut("response") {
                    answer_texts(response, &mut redact);
                }
            }
        }
        if !changed {
            return false;
        }
        let data = serde_json::to_vec(&body).unwrap_or_default();
        write_event(name, &data, out);
        true
    }

    /// Validates a delta of `key`'s text; true when a validator blocked (see [`Self::blocked`]).
    /// Each scans the delta with the last [`TAIL`] characters before it; findings that ended
    /// in those were seen with the delta before. Prompt injection scores every phrase found so
    /// far in the answer, so its verdict is the whole answer's without rescanning it.
    fn check(&mut self, key: Key, text: &str) -> bool {
        if self.validate.is_empty() {
            return false;
        }
        let w = match self.watches.iter().position(|w| w.key == key) {
            Some(i) => i,
            None => {
                self.watches.push(Watch {
                    key,
                    tail: String::new(),
                    phrases: vec![Vec::new(); self.validate.len()],
                });
                self.watches.len() - 1
            }
        };
        let Self {
            set,
            validate,
            watches,
            ..
        } = self;
        let w = &mut watches[w];
        let seen = w.tail.len();
        w.tail.push_str(text);
        let window = w.tail.as_str();
        let mut hit = None;
        for (i, &id) in validate.iter().enumerate() {
            let Some(g) = set.get(id) else { continue };
            let (flagged, categories) = match &g.scanner {
                Scanner::Injection(s) => {
                    let phrases = &mut w.phrases[i];
                    let new = s.findings(window).into_iter().filter(|f| f.end > seen);
                    phrases.extend(new.map(|f| f.category));
                    let score = s.weigh(phrases.iter().map(|c| &**c));
                    (s.reaches(score), phrases.clone())
                }
                _ => {
                    let Some(c) = set.check(id, window) else {
                        continue;
                    };
                    let found: Vec<Arc<str>> = c
                        .findings
                        .into_iter()
                        .filter(|f| f.end > seen)
                        .map(|f| f.category)
                        .collect();
                    (!found.is_empty(), found)
                }
            };
            if flagged && g.strategy.decide(Outcome::Flag).blocks() {
                hit = Some(Blocked {
                    guardrail: id,
                    categories: categories.iter().map(ToString::to_string).collect(),
                });
                break;
            }
        }
        if let Some((cut, _)) = w.tail.char_indices().rev().nth(TAIL - 1) {
            w.tail.drain(..cut);
        }
        self.blocked = hit;
        self.blocked.is_some()
    }

    fn redact(&mut self, key: Key, text: &str) -> String {
        if let Some((_, r)) = self.redactors.iter_mut().find(|(k, _)| *k == key) {
            return r.feed(text);
        }
        let mut r = self.set.stream_redactor(&self.mutate);
        let out = r.feed(text);
        self.redactors.push((key, r));
        out
    }

    /// What `key`'s redactor still holds; the redactor is done.
    fn rest(&mut self, key: Key) -> String {
        let Some(i) = self.redactors.iter().position(|(k, _)| *k == key) else {
            return String::new();
        };
        let (_, mut r) = self.redactors.remove(i);
        let rest = r.finish();
        self.redacted
            .extend(r.findings().iter().map(|f| f.category.clone()));
        rest
    }

    /// What a chat choice's redactor still holds, as one more content chunk.
    fn flush(&mut self, key: Key, out: &mut Vec<u8>) {
        let Key::Choice(i) = key else { return };
        let rest = self.rest(key);
        if !rest.is_empty() {
            let _ = std::io::Write::write_fmt(
                out,
                format_args!(
                    "data: {{\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":{i},\"delta\":{{\"content\":"
                ),
            );
            json_str(out, &rest);
            out.extend_from_slice(b"}}]}\n\n");
        }
    }

    /// Every chat choice's held-back text (at `[DONE]`).
    fn flush_choices(&mut self, out: &mut Vec<u8>) {
        let keys: Vec<Key> = self
            .redactors
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| matches!(k, Key::Choice(_)))
            .collect();
        for k in keys {
            self.flush(k, out);
        }
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
