//! A counting-only byte-pair encoder over OpenAI's rank tables.
//!
//! `tiktoken-rs` ships the tables, but its `CoreBPE` keeps three copies of the vocabulary
//! (encoder, decoder, sorted bytes) as separately allocated vectors: ~50 MB resident for o200k
//! in every worker, and freeing it does not give the pages back. Counting needs only the
//! bytes -> rank map: `build.rs` writes each table into the library as static data, and at run
//! time a map of slices into it (~9 MB) is all that is built. The split pattern is the
//! encoding's own (made look-ahead free, see `lookahead_free`); merges follow the same rule
//! (the adjacent pair of lowest rank first, the leftmost on a tie), so counts are the same as
//! `CoreBPE::encode_ordinary(..).len()` (tested below against it).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};
use rustc_hash::FxHashMap;

pub(crate) static CL100K: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cl100k.bpe"));
pub(crate) static O200K: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k.bpe"));

pub(crate) struct Bpe {
    ranks: FxHashMap<&'static [u8], u32>,
    split: Regex,
}

/// The split pattern without its one look-ahead, for the `regex` crate (a DFA: ~1.7x faster
/// here than `fancy-regex`'s backtracking on the original). `pattern` is the encoding's own
/// with `\s+(?!\S)` written `\s+` (it matches the whole whitespace run then) and
/// possessive quantifiers written greedy (no alternative here can backtrack into them, so
/// they match the same). `Bpe::count` restores the look-ahead's effect: see `pieces`.
pub(crate) fn lookahead_free(pattern: &str) -> String {
    pattern
        .replace(r"\s+(?!\S)", r"\s+")
        .replace("?+", "?")
        .replace("++", "+")
        .replace("*+", "*")
        .replace("{1,3}+", "{1,3}")
}

impl Bpe {
    /// A table as `build.rs` writes it (per token: rank u32 LE, length u8, bytes) and the
    /// encoding's split pattern.
    pub(crate) fn new(
        table: &'static [u8],
        pattern: &str,
    ) -> Result<Self, Box<regex_automata::meta::BuildError>> {
        let split = Regex::new(&lookahead_free(pattern)).map_err(Box::new)?;
        let entries = || {
            let mut rest = table;
            std::iter::from_fn(move || {
                let [a, b, c, d, len, tail @ ..] = rest else {
                    return None;
                };
                let (token, next) = tail.split_at(usize::from(*len).min(tail.len()));
                rest = next;
                Some((token, u32::from_le_bytes([*a, *b, *c, *d])))
            })
        };
        // Sized exactly: a map grown by doubling would hold up to twice the buckets.
        let mut ranks = FxHashMap::with_capacity_and_hasher(entries().count(), Default::default());
        ranks.extend(entries());
        Ok(Self { ranks, split })
    }

    /// Tokens in `text`.
    pub(crate) fn count(&self, text: &str) -> u64 {
        self.pieces(text).map(|p| self.piece(p.as_bytes())).sum()
    }

    /// The pieces the encoding's split pattern cuts `text` into. Where the original pattern's
    /// `\s+(?!\S)` would match, the look-ahead-free one matches the whole whitespace run;
    /// when a non-space follows the run, the look-ahead would have left the run's last
    /// character to the next piece (e.g. " world" of "a   world"), so that is done here. Only
    /// that alternative ends a piece of several whitespace characters, none of them a line
    /// break, right before a non-space.
    pub(crate) fn pieces<'t>(&'t self, text: &'t str) -> impl Iterator<Item = &'t str> + 't {
        let mut at = 0;
        std::iter::from_fn(move || {
            // Every character starts a piece (the pattern's last branches take any space or
            // symbol), so the next piece is anchored where the last one ended: a forward scan
            // only, where an unanchored search also scanned back for the start. Should a
            // character ever start none, the unanchored search skips it as before.
            let input = Input::new(text).range(at..);
            let m = match self.split.find(input.clone().anchored(Anchored::Yes)) {
                Some(m) => m,
                None => self.split.find(input)?,
            };
            let piece = &text[m.start()..m.end()];
            let mut end = m.end();
            if end < text.len()
                && piece
                    .chars()
                    .all(|c| c.is_whitespace() && c != '\r' && c != '\n')
            {
                if let Some((last, _)) = piece.char_indices().next_back().filter(|(i, _)| *i > 0) {
                    end = m.start() + last;
                }
            }
            at = end;
            Some(&text[m.start()..end])
        })
    }

    fn piece(&self, piece: &[u8]) -> u64 {
        if piece.len() <= 1 || self.ranks.contains_key(piece) {
            return piece.len().min(1) as u64;
        }
        merge_count(&self.ranks, piece)
    }
}

/// Merges `piece` (of two bytes or more) down to tokens and counts them: the pair of adjacent
/// tokens whose concatenation has the lowest rank merges first, the leftmost on a tie, until no
/// pair is in the table. A heap of candidate pairs, checked against the current pair when
/// popped, keeps this O(n log n) for the long pieces (a base64 blob is one piece).
fn merge_count(ranks: &FxHashMap<&'static [u8], u32>, piece: &[u8]) -> u64 {
    const NONE: u32 = u32::MAX;
    let len = piece.len();
    let rank = |from: usize, to: usize| ranks.get(&piece[from..to]).copied().unwrap_or(NONE);
    // Tokens are identified by their first byte: `end[i]` is where the token at `i` ends,
    // `prev[i]` where its left neighbour starts, `pair[i]` the rank of it merged with its right
    // neighbour (NONE when there is none in the table, or `i` no longer starts a token).
    let mut end: Vec<usize> = (1..=len).collect();
    let mut prev: Vec<usize> = (0..len).map(|i| i.wrapping_sub(1)).collect();
    let mut pair = vec![NONE; len];
    let mut heap = BinaryHeap::with_capacity(len);
    for (i, r) in pair.iter_mut().enumerate().take(len - 1) {
        *r = rank(i, i + 2);
        if *r != NONE {
            heap.push(Reverse((*r, i)));
        }
    }
    let mut tokens = len;
    while let Some(Reverse((r, i))) = heap.pop() {
        if pair[i] != r {
            continue; // that pair has changed since
        }
        let right = end[i];
        let after = end[right];
        end[i] = after;
        pair[right] = NONE;
        tokens -= 1;
        if after < len {
            prev[after] = i;
            pair[i] = rank(i, end[after]);
            if pair[i] != NONE {
                heap.push(Reverse((pair[i], i)));
            }
        } else {
            pair[i] = NONE;
        }
        if i > 0 {
            let left = prev[i];
            pair[left] = rank(left, after);
            if pair[left] != NONE {
                heap.push(Reverse((pair[left], left)));
            }
        }
    }
    tokens as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Encoding;
    use proptest::prelude::*;
    use tiktoken_rs::CoreBPE;

    fn both(enc: Encoding) -> (&'static Bpe, &'static CoreBPE) {
        let core = match enc {
            Encoding::Cl100k => tiktoken_rs::cl100k_base_singleton(),
            Encoding::O200k => tiktoken_rs::o200k_base_singleton(),
        };
        (enc.bpe(), core)
    }

    fn same(bpe: &Bpe, core: &CoreBPE, text: &str) {
        let want = core.encode_ordinary(text).len() as u64;
        assert_eq!(bpe.count(text), want, "{text:?}");
    }

    const TEXTS: &[&str] = &[
        "",
        "hello world",
        "Hello, World! How's it going? I'm fine, we'll see.",
        "  leading and trailing spaces   \n\n\t tabs\r\n",
        "fn main() { println!(\"{}\", 1 + 2); } // code",
        "数字 12345678901234567890 and émojis 🦀🦀🦀 ñandú",
        "<|endoftext|> is text here, and <|fim_prefix|> too",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "https://example.com/path?query=1&other=two#frag",
        "ThisIsAVeryLongIdentifierWithoutAnySpacesThatGoesOnAndOnAndOnForAWhile_and_snake_case",
    ];

    #[test]
    fn tables_hold_every_ordinary_token() {
        assert_eq!(Encoding::Cl100k.bpe().ranks.len(), 100_256);
        assert_eq!(Encoding::O200k.bpe().ranks.len(), 199_998);
    }

    #[test]
    fn counts_equal_tiktoken_on_samples() {
        for enc in [Encoding::Cl100k, Encoding::O200k] {
            let (bpe, core) = both(enc);
            for text in TEXTS {
                same(bpe, core, text);
            }
            // One long piece (no split point): the heap path at its largest.
            let blob: String = (0..20_000)
                .map(|i| (b'A' + (i * 7 % 26) as u8) as char)
                .collect();
            same(bpe, core, &blob);
            let b64 = "QUJDRGVmZ2hpams0NTY3ODkrLw==".repeat(500);
            same(bpe, core, &b64);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn counts_equal_tiktoken(text in "(\\PC|[ \\n\\t]){0,200}") {
            for enc in [Encoding::Cl100k, Encoding::O200k] {
                let (bpe, core) = both(enc);
                prop_assert_eq!(bpe.count(&text), core.encode_ordinary(&text).len() as u64);
            }
        }

        #[test]
        fn counts_equal_tiktoken_around_whitespace(
            text in "([ \t\r\n\u{a0}\u{2003}\u{3000}]{0,4}[a-zA-Z0-9.,!'/]{0,3}){0,30}"
        ) {
            for enc in [Encoding::Cl100k, Encoding::O200k] {
                let (bpe, core) = both(enc);
                prop_assert_eq!(bpe.count(&text), core.encode_ordinary(&text).len() as u64);
            }
        }

        #[test]
        fn counts_equal_tiktoken_on_ascii_words(text in "[a-zA-Z0-9 .,'!?_\\-]{0,400}") {
            let (bpe, core) = both(Encoding::O200k);
            prop_assert_eq!(bpe.count(&text), core.encode_ordinary(&text).len() as u64);
        }
    }
}
