//! Mutate: findings become typed placeholders (`[REDACTED:EMAIL]`), whole or streamed.
//!
//! A stream cannot redact what it has not seen, so [`StreamRedactor`] holds back a tail. The
//! bound is the longest match any pattern can make (computed from each regex, see
//! [`PatternSet::max_len`]: PII about 350 bytes, secrets about 6.5 KB because of PEM blocks),
//! but it holds back far less in practice: only from the first byte at which a match could
//! still be growing, as told by an anchored lazy DFA over all patterns. Prose is emitted up to
//! its last word; a half-written key is held until it is complete or ruled out.
//!
//! The guarantee, tested for every split: the streamed output equals [`redact`] of the whole
//! text. Sketch: a match starting before the emit point cannot grow (the DFA says so), so it
//! is final; the point never falls inside a match (accepted or checksum-rejected), so every
//! pattern resumes where the whole-text scan would; the kept context gives `\b` its byte.

use super::patterns::{PatternSet, RawMatch};
use super::Finding;
use std::sync::Arc;

/// Text older than this is emitted even if an unbounded user pattern could still be matching
/// it; built-in patterns are all bounded below this.
pub const MAX_HOLDBACK: usize = 16 * 1024;
/// Bytes of already-emitted text kept as look-behind context (one char for `\b`).
const CONTEXT: usize = 4;

pub fn placeholder(category: &str) -> String {
    format!("[REDACTED:{category}]")
}

/// Overlapping findings become one, named after the one that starts first (the longest on a
/// tie). Touching findings stay two, so the result does not depend on where a stream cuts.
pub fn merge(mut findings: Vec<Finding>) -> Vec<Finding> {
    findings.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out: Vec<Finding> = Vec::with_capacity(findings.len());
    for f in findings {
        match out.last_mut() {
            Some(last) if f.start < last.end => last.end = last.end.max(f.end),
            _ => out.push(f),
        }
    }
    out
}

/// Appends `text` with each (merged, sorted) finding replaced; offsets are into `text`.
fn apply(text: &str, merged: &[Finding], offset: usize, out: &mut String) {
    let mut at = 0;
    for f in merged {
        let (s, e) = (f.start - offset, f.end - offset);
        out.push_str(&text[at..s]);
        out.push_str("[REDACTED:");
        out.push_str(&f.category);
        out.push(']');
        at = e;
    }
    out.push_str(&text[at..]);
}

/// Redacts `text` with every pattern of `sets`; returns the new text and the merged findings
/// (offsets into the original text).
pub fn redact(sets: &[&PatternSet], text: &str) -> (String, Vec<Finding>) {
    redacted(sets, text).unwrap_or_else(|| (text.to_owned(), Vec::new()))
}

/// [`redact`], or `None` when nothing was found (no copy of the text is made).
pub fn redacted(sets: &[&PatternSet], text: &str) -> Option<(String, Vec<Finding>)> {
    let mut found = Vec::new();
    for s in sets {
        s.findings(text, &mut found);
    }
    if found.is_empty() {
        return None;
    }
    let merged = merge(found);
    let mut out = String::with_capacity(text.len());
    apply(text, &merged, 0, &mut out);
    Some((out, merged))
}

/// Redacts a stream of text deltas; see the module doc for what it holds back and why.
pub struct StreamRedactor {
    sets: Vec<Arc<PatternSet>>,
    caches: Vec<regex_automata::hybrid::dfa::Cache>,
    /// Up to `CONTEXT` bytes of emitted text, then the text not yet emitted.
    buf: String,
    ctx: usize,
    /// Bytes of input before `buf[ctx..]`, for finding offsets.
    base: usize,
    bound: usize,
    findings: Vec<Finding>,
}

impl StreamRedactor {
    pub fn new(sets: Vec<Arc<PatternSet>>) -> Self {
        let caches = sets.iter().map(|s| s.cache()).collect();
        let bound = sets
            .iter()
            .map(|s| s.max_len.unwrap_or(MAX_HOLDBACK).min(MAX_HOLDBACK))
            .max()
            .unwrap_or(0);
        Self {
            sets,
            caches,
            buf: String::new(),
            ctx: 0,
            base: 0,
            bound,
            findings: Vec::new(),
        }
    }

    /// The most bytes this redactor may hold back.
    pub fn holdback_bound(&self) -> usize {
        self.bound
    }

    /// Bytes received but not yet emitted.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.ctx
    }

    /// Findings emitted so far (merged, offsets into the whole input).
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Takes the next delta; returns the text that is safe to emit now (possibly empty).
    pub fn feed(&mut self, delta: &str) -> String {
        self.buf.push_str(delta);
        self.step(false)
    }

    /// Ends the stream: everything still held back, redacted.
    pub fn finish(&mut self) -> String {
        self.step(true)
    }

    fn step(&mut self, last: bool) -> String {
        if self.sets.is_empty() {
            let out = self.buf[self.ctx..].to_owned();
            self.advance(self.buf.len());
            return out;
        }
        let (hay, start) = (self.buf.as_str(), self.ctx);
        let mut raw: Vec<(usize, RawMatch)> = Vec::new();
        let mut tmp = Vec::new();
        for (i, s) in self.sets.iter().enumerate() {
            tmp.clear();
            s.raw_matches(hay, start, &mut tmp);
            raw.extend(tmp.iter().map(|m| (i, *m)));
        }
        let mut cut = if last {
            hay.len()
        } else {
            self.first_growing(start)
        };
        // Never cut between a match's start and where its pattern resumes: the next scan must
        // resume where a whole-text scan would. Moving the cut left can land inside another
        // match; repeat.
        let mut moved = true;
        while moved {
            moved = false;
            for (_, m) in &raw {
                if m.start < cut && cut < m.resume {
                    cut = m.start;
                    moved = true;
                }
            }
        }
        let hay = self.buf.as_str();
        let found: Vec<Finding> = raw
            .iter()
            .filter_map(|(i, m)| {
                let (start, end) = m.accepted.filter(|(_, b)| *b <= cut)?;
                Some(Finding {
                    category: self.sets[*i].category(m.pattern).clone(),
                    start,
                    end,
                })
            })
            .collect();
        let merged = merge(found);
        let mut out = String::with_capacity(cut - start);
        apply(&hay[start..cut], &merged, start, &mut out);
        let base = self.base;
        self.findings.extend(merged.into_iter().map(|f| Finding {
            category: f.category,
            start: f.start - start + base,
            end: f.end - start + base,
        }));
        self.advance(cut);
        out
    }

    /// The first char boundary in the unemitted text at which some match could still grow.
    fn first_growing(&mut self, start: usize) -> usize {
        let hay = self.buf.as_str();
        let mut at = start.max(hay.len().saturating_sub(self.bound));
        while at < hay.len() {
            if hay.is_char_boundary(at) {
                let growing = self
                    .sets
                    .iter()
                    .zip(self.caches.iter_mut())
                    .any(|(s, c)| s.could_grow(c, hay, at));
                if growing {
                    return at;
                }
            }
            at += 1;
        }
        hay.len()
    }

    /// Drops emitted text up to `cut`, keeping a little as look-behind context.
    fn advance(&mut self, cut: usize) {
        let mut keep = cut.saturating_sub(CONTEXT);
        while !self.buf.is_char_boundary(keep) {
            keep += 1;
        }
        self.base += cut - self.ctx;
        self.buf.drain(..keep);
        self.ctx = cut - keep;
    }
}
