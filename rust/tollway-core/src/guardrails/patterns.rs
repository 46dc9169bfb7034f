//! A compiled family of patterns: one `RegexSet` to learn which patterns occur, one `Regex`
//! each for the spans, and an anchored lazy DFA over all of them that tells a stream whether
//! a match starting at some byte could still be growing (so only that tail is held back).

use super::Finding;
use regex::{Regex, RegexSet};
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::{Anchored, Input, MatchKind};
use std::sync::Arc;

/// Given a regex match, the span (within it) that really is a finding, if any.
pub type Refine = fn(&str) -> Option<(usize, usize)>;

/// A pattern as written in the source: category, regex, and an optional checksum on the text.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub category: &'static str,
    pub pattern: &'static str,
    pub validate: Option<Refine>,
}

#[derive(Debug)]
struct Pattern {
    category: Arc<str>,
    regex: Regex,
    validate: Option<Refine>,
}

/// One regex match and, if its checksum passed, the finding inside it. The next search
/// resumes after the finding, or one character after a rejected match's start (a valid card
/// can hide inside a longer rejected run of digits); a stream must not cut between `start`
/// and `resume`, or its next scan would not resume where a whole-text scan does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawMatch {
    pub pattern: usize,
    pub start: usize,
    pub resume: usize,
    pub accepted: Option<(usize, usize)>,
}

#[derive(Debug)]
pub struct PatternSet {
    patterns: Vec<Pattern>,
    set: RegexSet,
    growing: DFA,
    /// The longest match any pattern can make, in bytes; `None` if some pattern is unbounded.
    pub max_len: Option<usize>,
}

/// Why a pattern cannot be used; `kind` is the regex crate's one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub index: usize,
    pub kind: String,
}

/// The last line of the regex crate's message ("error: unclosed group") without the pattern
/// echo above it, which is multi-line and may be long.
fn short_reason(e: &dyn std::fmt::Display) -> String {
    let full = e.to_string();
    let line = full
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid pattern");
    line.trim().trim_start_matches("error: ").to_owned()
}

/// Checks one user pattern: valid syntax, and it cannot match the empty string (an empty
/// match would redact nothing and flag every text).
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let hir = regex_syntax::parse(pattern).map_err(|e| short_reason(&e))?;
    if hir.properties().minimum_len() == Some(0) {
        return Err("the pattern can match the empty string".to_owned());
    }
    Regex::new(pattern).map(drop).map_err(|e| short_reason(&e))
}

impl PatternSet {
    pub fn from_specs(specs: &[Spec]) -> Result<Self, PatternError> {
        Self::new(
            specs
                .iter()
                .map(|s| (Arc::from(s.category), s.pattern.to_owned(), s.validate)),
        )
    }

    pub fn new(
        items: impl IntoIterator<Item = (Arc<str>, String, Option<Refine>)>,
    ) -> Result<Self, PatternError> {
        let mut patterns = Vec::new();
        let mut sources = Vec::new();
        let mut max_len = Some(0usize);
        for (index, (category, source, validate)) in items.into_iter().enumerate() {
            let err = |e: &dyn std::fmt::Display| PatternError {
                index,
                kind: short_reason(e),
            };
            let hir = regex_syntax::parse(&source).map_err(|e| err(&e))?;
            max_len = max_len
                .zip(hir.properties().maximum_len())
                .map(|(a, b)| a.max(b));
            let regex = Regex::new(&source).map_err(|e| err(&e))?;
            patterns.push(Pattern {
                category,
                regex,
                validate,
            });
            sources.push(source);
        }
        let set = RegexSet::new(&sources).map_err(|e| PatternError {
            index: 0,
            kind: short_reason(&e),
        })?;
        let growing = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(MatchKind::All)
                    .unicode_word_boundary(true),
            )
            .build_many(&sources)
            .map_err(|e| PatternError {
                index: 0,
                kind: short_reason(&e),
            })?;
        Ok(Self {
            patterns,
            set,
            growing,
            max_len,
        })
    }

    pub fn category(&self, pattern: usize) -> &Arc<str> {
        &self.patterns[pattern].category
    }

    /// Every match of every pattern starting at or after `start`; bytes before `start` are
    /// context for look-behind (`\b`) only.
    pub fn raw_matches(&self, hay: &str, start: usize, out: &mut Vec<RawMatch>) {
        // One pattern is searched directly (its literal prefilter beats a set's overlapping
        // search); with several, one pass of the set says which to search for spans.
        let hits: Vec<usize> = if self.patterns.len() == 1 {
            vec![0]
        } else {
            self.set.matches_at(hay, start).into_iter().collect()
        };
        for i in hits {
            let p = &self.patterns[i];
            let mut at = start;
            while at <= hay.len() {
                let Some(m) = p.regex.find_at(hay, at) else {
                    break;
                };
                if m.is_empty() {
                    // User patterns are checked not to match empty, but stay safe anyway.
                    at = next_char(hay, m.end());
                    continue;
                }
                let accepted = match p.validate {
                    None => Some((m.start(), m.end())),
                    Some(refine) => refine(m.as_str())
                        .filter(|(a, b)| a < b && *b <= m.len())
                        .map(|(a, b)| (m.start() + a, m.start() + b)),
                };
                let resume = match accepted {
                    Some((_, b)) => b,
                    None => next_char(hay, m.start()),
                };
                out.push(RawMatch {
                    pattern: i,
                    start: m.start(),
                    resume,
                    accepted,
                });
                at = resume;
            }
        }
    }

    /// The accepted matches in `text`, in no particular order.
    pub fn findings(&self, text: &str, out: &mut Vec<Finding>) {
        let mut raw = Vec::new();
        self.raw_matches(text, 0, &mut raw);
        out.extend(raw.into_iter().filter_map(|m| {
            let (start, end) = m.accepted?;
            Some(Finding {
                category: self.patterns[m.pattern].category.clone(),
                start,
                end,
            })
        }));
    }

    pub fn is_match(&self, text: &str) -> bool {
        let mut found = Vec::new();
        self.findings(text, &mut found);
        !found.is_empty()
    }

    pub fn cache(&self) -> Cache {
        self.growing.create_cache()
    }

    /// Whether some match starting at `at` could reach past the end of `hay`, i.e. more text
    /// could change it. Conservative: any doubt (the DFA quit on non-ASCII near a Unicode
    /// `\b`) answers yes.
    pub fn could_grow(&self, cache: &mut Cache, hay: &str, at: usize) -> bool {
        let input = Input::new(hay).range(at..).anchored(Anchored::Yes);
        let Ok(mut sid) = self.growing.start_state_forward(cache, &input) else {
            return true;
        };
        for &b in &hay.as_bytes()[at..] {
            match self.growing.next_state(cache, sid, b) {
                Ok(next) => sid = next,
                Err(_) => return true,
            }
            if sid.is_tagged() {
                if sid.is_dead() {
                    return false;
                }
                if sid.is_quit() {
                    return true;
                }
            }
        }
        true
    }
}

pub fn next_char(s: &str, i: usize) -> usize {
    (i + 1..=s.len())
        .find(|&j| s.is_char_boundary(j))
        .unwrap_or(s.len() + 1)
}
