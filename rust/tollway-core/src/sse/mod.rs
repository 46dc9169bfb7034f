//! An incremental Server-Sent Events parser: raw upstream chunks in, whole events out, whatever
//! byte the network split them at. Work is linear in the bytes fed and memory is bounded by the
//! largest allowed event; the metering and translation on top of it live in [`meter`].

pub mod anthropic;
pub mod bedrock;
mod chunks;
pub mod gemini;
pub mod guard;
pub mod meter;
pub mod openai;
pub mod responses;
mod scan;
pub mod to_anthropic;

pub use guard::{Blocked, OutputGuard};
pub use meter::{MeterOptions, SseMeter, StreamFormat};

use std::borrow::Cow;
use std::fmt;

use memchr::{memchr, memchr2};
use serde::Deserialize;

/// One complete event, borrowed from the parser until the callback returns.
#[derive(Debug)]
pub struct Event<'a> {
    /// The `event:` field, empty when absent (the spec's default `message`).
    pub name: &'a [u8],
    /// The `data:` lines joined by `\n`; `None` for a block with no data (comments, blank lines).
    pub data: Option<&'a [u8]>,
    /// The block exactly as received, through its terminating blank line.
    pub raw: &'a [u8],
}

/// What the caller wants done with an event's raw bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Forward,
    Drop,
    /// Stop parsing: the rest of this chunk and every later one is ignored.
    Stop,
}

/// What reads the events the parser frames. A reader may also read a whole event itself, from
/// the bytes at its start, when it knows their form: the parser then skips framing it.
pub(crate) trait Reader {
    fn event(&mut self, e: &Event<'_>) -> Flow;

    /// The length of the event at the start of `bytes` (through its blank line) when this
    /// reader read it whole and wants it forwarded; None leaves it to the parser. It may only
    /// read events of one `data:` line, no other field, ended by `\n\n`, that the parser would
    /// frame the same.
    fn whole_event(&mut self, _bytes: &[u8]) -> Option<usize> {
        None
    }
}

impl<F: FnMut(&Event<'_>) -> Flow + ?Sized> Reader for F {
    fn event(&mut self, e: &Event<'_>) -> Flow {
        self(e)
    }
}

/// An event grew past the parser's limit; the parser stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge;

/// Line-splitting state and the fields of the event being read. Positions are relative to the
/// start of that event's block, so they survive moving the block into the carry buffer.
#[derive(Debug)]
pub struct SseParser {
    /// Bytes of the incomplete block received in earlier chunks.
    carry: Vec<u8>,
    /// How many bytes of the incomplete block have been split into lines.
    scanned: usize,
    line_start: usize,
    data: Vec<(usize, usize)>,
    name: Option<(usize, usize)>,
    joined: Vec<u8>,
    /// The last byte seen was a CR: an LF right after it is the same line ending.
    skip_lf: bool,
    last_forwarded: bool,
    stopped: bool,
    max_event: usize,
}

impl SseParser {
    pub fn new(max_event: usize) -> Self {
        Self {
            carry: Vec::new(),
            scanned: 0,
            line_start: 0,
            data: Vec::new(),
            name: None,
            joined: Vec::new(),
            skip_lf: false,
            last_forwarded: false,
            stopped: false,
            max_event,
        }
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Bytes held back: the start of an event whose end has not arrived.
    pub fn pending(&self) -> usize {
        self.carry.len()
    }

    /// Splits `chunk` into events and calls `on_event` for each complete one, appending the raw
    /// bytes of those it forwards to `out`. A partial event at the end is kept for the next call.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<u8>,
        on_event: &mut dyn FnMut(&Event<'_>) -> Flow,
    ) -> Result<(), TooLarge> {
        self.read(chunk, out, on_event)
    }

    /// [`Self::feed`] with a [`Reader`].
    pub(crate) fn read<R: Reader + ?Sized>(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<u8>,
        on_event: &mut R,
    ) -> Result<(), TooLarge> {
        if self.stopped {
            return Ok(());
        }
        let mut carry = std::mem::take(&mut self.carry);
        // Most chunks start on an event boundary: parse them in place and copy only the tail.
        let scanned = if carry.is_empty() {
            let r = self.scan(chunk, out, on_event);
            if let Ok(block) = r {
                carry.extend_from_slice(&chunk[block..]);
            }
            r
        } else {
            carry.extend_from_slice(chunk);
            let r = self.scan(&carry, out, on_event);
            if let Ok(block) = r {
                carry.drain(..block);
            }
            r
        };
        if self.stopped {
            // The caller asked to stop; whatever followed is not wanted.
            self.stop();
            return Ok(());
        }
        if scanned.is_err() || carry.len() > self.max_event {
            self.stop();
            return Err(TooLarge);
        }
        self.carry = carry;
        Ok(())
    }

    /// Ends the stream: a final event missing its blank line (or even its last newline) is
    /// completed and dispatched, so a truncated JSON payload reaches the caller as such.
    pub fn finish(
        &mut self,
        out: &mut Vec<u8>,
        on_event: &mut dyn FnMut(&Event<'_>) -> Flow,
    ) -> Result<(), TooLarge> {
        self.skip_lf = false;
        if self.stopped || self.carry.is_empty() {
            return Ok(());
        }
        if self.line_start < self.scanned {
            self.feed(b"\n", out, on_event)?;
        }
        if !self.carry.is_empty() {
            self.feed(b"\n", out, on_event)?;
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.carry = Vec::new();
        self.data = Vec::new();
        self.joined = Vec::new();
    }

    /// Splits `buf` (the incomplete block so far plus new bytes) into lines from where the last
    /// call stopped; returns where the still-incomplete block starts.
    fn scan<R: Reader + ?Sized>(
        &mut self,
        buf: &[u8],
        out: &mut Vec<u8>,
        on_event: &mut R,
    ) -> Result<usize, TooLarge> {
        let mut block = 0;
        let mut pos = self.scanned;
        if self.skip_lf && pos < buf.len() {
            self.skip_lf = false;
            if buf[pos] == b'\n' {
                if self.scanned == 0 {
                    // The CR ended the previous block: its LF goes where that block went.
                    if self.last_forwarded {
                        out.push(b'\n');
                    }
                    block = 1;
                } else {
                    self.line_start = pos + 1;
                }
                pos += 1;
            }
        }
        loop {
            if pos == block && self.line_start == 0 {
                // An event's first byte: its reader may read it whole (within the limit).
                let at = &buf[block..];
                let at = at.get(..self.max_event).unwrap_or(at);
                if let Some(n) = on_event.whole_event(at) {
                    out.extend_from_slice(&at[..n]);
                    self.last_forwarded = true;
                    block += n;
                    pos = block;
                    continue;
                }
            }
            let Some(i) = memchr2(b'\n', b'\r', &buf[pos..]) else {
                break;
            };
            let end = pos + i;
            let mut next = end + 1;
            if buf[end] == b'\r' {
                match buf.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            let line_start = block + self.line_start;
            if line_start == end {
                if next - block > self.max_event {
                    return Err(TooLarge);
                }
                let flow = self.dispatch(&buf[block..next], on_event);
                match flow {
                    Flow::Forward => out.extend_from_slice(&buf[block..next]),
                    Flow::Drop => {}
                    Flow::Stop => {
                        self.stopped = true;
                        return Ok(block);
                    }
                }
                self.last_forwarded = flow == Flow::Forward;
                self.data.clear();
                self.name = None;
                block = next;
                self.line_start = 0;
            } else {
                self.field(&buf[line_start..end], line_start - block);
                self.line_start = next - block;
            }
            pos = next;
        }
        self.scanned = buf.len() - block;
        Ok(block)
    }

    fn field(&mut self, line: &[u8], at: usize) {
        if line[0] == b':' {
            return;
        }
        let (name, value) = match memchr(b':', line) {
            Some(c) => (
                &line[..c],
                c + 1 + usize::from(line.get(c + 1) == Some(&b' ')),
            ),
            None => (line, line.len()),
        };
        let range = (at + value, at + line.len());
        match name {
            b"data" => self.data.push(range),
            b"event" => self.name = Some(range),
            _ => {} // id and retry mean nothing to a proxy that does not reconnect
        }
    }

    fn dispatch<R: Reader + ?Sized>(&mut self, raw: &[u8], on_event: &mut R) -> Flow {
        let data = match self.data.as_slice() {
            [] => None,
            [(a, b)] => Some(&raw[*a..*b]),
            ranges => {
                self.joined.clear();
                for (i, (a, b)) in ranges.iter().enumerate() {
                    if i > 0 {
                        self.joined.push(b'\n');
                    }
                    self.joined.extend_from_slice(&raw[*a..*b]);
                }
                Some(self.joined.as_slice())
            }
        };
        let name = self.name.map_or(&b""[..], |(a, b)| &raw[a..b]);
        on_event.event(&Event { name, data, raw })
    }
}

/// The largest event accepted; a bigger one is a broken or hostile upstream.
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// Output text kept for counting tokens when the provider reports none; past it, bytes / 4.
const MAX_TEXT_BYTES: usize = 4 << 20;

/// Why a stream is not a complete, well-formed answer. The client must get an error for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// A `data:` line that should be JSON is not.
    InvalidJson,
    /// An event larger than [`MAX_EVENT_BYTES`].
    EventTooLarge,
    /// The provider sent an error event; `kind` is its type when it gave one.
    Upstream {
        kind: Option<String>,
        message: String,
    },
    /// The stream ended before a finish reason or end marker.
    Truncated,
}

impl StreamError {
    /// A stable code for the client's error body and for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_upstream_stream",
            Self::EventTooLarge => "upstream_event_too_large",
            Self::Upstream { .. } => "upstream_stream_error",
            Self::Truncated => "upstream_stream_truncated",
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidJson => f.write_str("the provider sent an event that is not valid JSON"),
            Self::EventTooLarge => {
                write!(f, "the provider sent an event over {MAX_EVENT_BYTES} bytes")
            }
            Self::Upstream {
                kind: Some(k),
                message,
            } => write!(f, "the provider sent an error ({k}): {message}"),
            Self::Upstream {
                kind: None,
                message,
            } => write!(f, "the provider sent an error: {message}"),
            Self::Truncated => f.write_str("the provider's stream ended before the answer did"),
        }
    }
}

/// Token counts as the provider reported them (either half may be missing on a cut stream).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    /// Prompt tokens written to the provider's cache (Anthropic bills them at their own rate);
    /// included in `prompt_tokens`.
    pub cache_creation_tokens: Option<u64>,
}

/// What a stream showed so far; shared by the OpenAI reader and the Anthropic translator.
#[derive(Debug)]
pub(crate) struct Recorder {
    started_ms: f64,
    first_token_ms: Option<f64>,
    last_token_ms: f64,
    token_events: u64,
    itl_max_ms: f64,
    text: String,
    text_overflow: usize,
    pub(crate) finish_reason: Option<String>,
    pub(crate) usage: Usage,
    pub(crate) done: bool,
    pub(crate) error: Option<StreamError>,
    pub(crate) response_id: Option<String>,
    /// The head the stream's chunks repeat, read once (OpenAI chunks).
    pub(crate) head: openai::ChunkHead,
}

impl Recorder {
    /// A content-bearing event arrived at `now_ms` with `text` (content, tool arguments...).
    pub(crate) fn token(&mut self, now_ms: f64, text: &str) {
        match self.first_token_ms {
            None => self.first_token_ms = Some(now_ms),
            Some(_) => self.itl_max_ms = self.itl_max_ms.max(now_ms - self.last_token_ms),
        }
        self.last_token_ms = now_ms;
        self.token_events += 1;
        self.push_text(text);
    }

    /// One delta's texts (a tool call's name and arguments among them) at `now_ms`: its first
    /// non-empty one (or its first, with a tool call) is a token event, the rest its text.
    pub(crate) fn delta<'t>(
        &mut self,
        now_ms: f64,
        parts: impl Iterator<Item = &'t str>,
        has_call: bool,
    ) {
        let mut first = true;
        for part in parts {
            if first && (!part.is_empty() || has_call) {
                first = false;
                self.token(now_ms, part);
            } else {
                self.push_text(part);
            }
        }
    }

    /// More output text of the current token event, kept for counting.
    pub(crate) fn push_text(&mut self, text: &str) {
        if self.text.len() + text.len() <= MAX_TEXT_BYTES {
            self.text.push_str(text);
        } else {
            self.text_overflow += text.len();
        }
    }

    pub(crate) fn fail(&mut self, e: StreamError) -> Flow {
        if self.error.is_none() {
            self.error = Some(e);
        }
        Flow::Stop
    }
}

#[derive(Deserialize)]
pub(crate) struct ErrorIn<'a> {
    #[serde(borrow, default, rename = "type")]
    pub(crate) kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) message: Option<Cow<'a, str>>,
}

impl ErrorIn<'_> {
    pub(crate) fn into_error(self) -> StreamError {
        StreamError::Upstream {
            kind: self.kind.map(Cow::into_owned),
            message: self
                .message
                .map_or_else(|| "unknown error".to_owned(), Cow::into_owned),
        }
    }
}

/// The message of an error event whose data is not the JSON we expect.
pub(crate) fn raw_error(data: &[u8]) -> StreamError {
    let text = String::from_utf8_lossy(&data[..data.len().min(200)]).into_owned();
    StreamError::Upstream {
        kind: None,
        message: text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, data) of every event, and the forwarded bytes, feeding `chunks` in order.
    fn parse(chunks: &[&[u8]]) -> (Vec<(String, Option<String>)>, Vec<u8>) {
        let mut p = SseParser::new(1 << 20);
        let mut events = Vec::new();
        let mut out = Vec::new();
        let mut cb = |e: &Event<'_>| {
            events.push((
                String::from_utf8_lossy(e.name).into_owned(),
                e.data.map(|d| String::from_utf8_lossy(d).into_owned()),
            ));
            Flow::Forward
        };
        for c in chunks {
            p.feed(c, &mut out, &mut cb).unwrap();
        }
        p.finish(&mut out, &mut cb).unwrap();
        (events, out)
    }

    fn ev(name: &str, data: Option<&str>) -> (String, Option<String>) {
        (name.to_owned(), data.map(str::to_owned))
    }

    #[test]
    fn line_endings_comments_and_multiline_data() {
        let expected = vec![
            ev("", Some("a")),
            ev("", None),
            ev("delta", Some("x\ny")),
            ev("", Some(" two spaces")),
        ];
        for eol in ["\n", "\r\n", "\r"] {
            let text = [
                "data: a",
                "",
                ": keep-alive",
                "",
                "event: delta",
                "data:x",
                "data: y",
                "",
                "data:  two spaces",
                "",
            ]
            .join(eol)
                + eol;
            let (events, out) = parse(&[text.as_bytes()]);
            assert_eq!(events, expected, "line ending {eol:?}");
            assert_eq!(out, text.as_bytes());
        }
    }

    #[test]
    fn every_two_way_split_gives_the_same_events_and_bytes() {
        let text = b"event: a\r\ndata: 1\r\n\r\n: c\r\rdata: 2\ndata: 3\n\ndata: [DONE]\r\n\r\n";
        let whole = parse(&[text]);
        for i in 0..=text.len() {
            assert_eq!(parse(&[&text[..i], &text[i..]]), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(parse(&bytes), whole);
    }

    #[test]
    fn a_final_event_without_its_blank_line_is_dispatched_at_finish() {
        assert_eq!(parse(&[b"data: [DONE]"]).0, vec![ev("", Some("[DONE]"))]);
        assert_eq!(parse(&[b"data: [DONE]\r"]).0, vec![ev("", Some("[DONE]"))]);
        assert_eq!(parse(&[b"data: x\n"]).1, b"data: x\n\n");
    }

    #[test]
    fn an_oversized_event_stops_the_parser() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        let mut cb = |_: &Event<'_>| Flow::Forward;
        p.feed(b"data: ok\n\n", &mut out, &mut cb).unwrap();
        assert_eq!(
            p.feed(b"data: 0123456789x", &mut out, &mut cb),
            Err(TooLarge)
        );
        assert!(p.stopped());
        assert_eq!(p.pending(), 0);
        p.feed(b"\n\ndata: later\n\n", &mut out, &mut cb).unwrap();
        assert_eq!(out, b"data: ok\n\n");
        let mut p = SseParser::new(16);
        assert_eq!(
            p.feed(b"data: 0123456789abc\n\n", &mut out, &mut cb),
            Err(TooLarge)
        );
    }
}
