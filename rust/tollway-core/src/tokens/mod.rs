//! Local token counts for when a provider reports none: OpenAI's BPE encodings (cl100k, o200k)
//! with the tables `tiktoken-rs` ships, each loaded once on first use into a compact
//! counting-only form (`bpe`). For other model
//! families the same encodings are an estimate, and every count from here is marked estimated
//! by its callers.

mod bpe;
mod prompt;

use std::sync::{Mutex, OnceLock};

use bpe::Bpe;
use rustc_hash::FxHashMap;

/// Texts up to this long are remembered with their count (see `Memo`).
const MEMO_MAX_TEXT: usize = 16 * 1024;
/// The memo's bytes (its texts, and `MEMO_ENTRY` for each entry), per encoding, before it
/// starts over: at most ~2 MB, or ~32k short texts.
const MEMO_BUDGET: usize = 2 << 20;
const MEMO_ENTRY: usize = 64;

/// Counts of texts seen before, per encoding: role names and system prompts repeat on nearly
/// every request, and finding one costs a hash where counting it costs a split and merges
/// (~1,000 instructions for a short sentence, ~100 a byte for a long prompt). Bounded: past
/// `MEMO_BUDGET` it is emptied and refills with what still repeats. A text seen once (a
/// user's message, an answer) costs its hash and a copy more than counting it.
/// An encoding's table and the counts it gave (see `Memo`).
struct Counter {
    bpe: Bpe,
    memo: Mutex<Memo>,
}

#[derive(Default)]
struct Memo {
    counts: FxHashMap<Box<str>, u64>,
    bytes: usize,
}

/// cl100k's split pattern (tiktoken-rs has it only inside its constructor).
const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

/// The BPE encodings Tollway counts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Cl100k,
    O200k,
}

impl Encoding {
    /// The encoding of an OpenAI model family; o200k (the current family's) for everything else.
    /// An `account/model` or `ft:model:...` name is looked up by its model part.
    pub fn for_model(model: &str) -> Self {
        let bare = model.rsplit('/').next().unwrap_or(model);
        match tiktoken_rs::tokenizer::get_tokenizer(bare) {
            Some(tiktoken_rs::tokenizer::Tokenizer::Cl100kBase) => Self::Cl100k,
            _ => Self::O200k,
        }
    }

    /// The table and the memo, built on first use (tens of milliseconds) and shared for the
    /// process.
    fn counter(self) -> &'static Counter {
        static CL100K: OnceLock<Counter> = OnceLock::new();
        static O200K: OnceLock<Counter> = OnceLock::new();
        let (cell, table, pattern) = match self {
            Self::Cl100k => (&CL100K, bpe::CL100K, CL100K_PATTERN),
            Self::O200k => (&O200K, bpe::O200K, tiktoken_rs::O200K_BASE_PAT_STR),
        };
        cell.get_or_init(|| Counter {
            // The pattern is the crate's own (and tested): a failure is a build defect.
            #[allow(clippy::expect_used)]
            bpe: Bpe::new(table, pattern).expect("the split pattern compiles"),
            memo: Mutex::default(),
        })
    }

    fn bpe(self) -> &'static Bpe {
        &self.counter().bpe
    }

    /// Tokens in `text`; special-token text counts as ordinary text, as a provider would see it
    /// inside a message.
    pub fn count(self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        let Counter { bpe, memo } = self.counter();
        if text.len() > MEMO_MAX_TEXT {
            return bpe.count(text);
        }
        if let Some(&n) = memo.lock().ok().as_ref().and_then(|m| m.counts.get(text)) {
            return n;
        }
        let n = bpe.count(text);
        if let Ok(mut m) = memo.lock() {
            let size = text.len() + MEMO_ENTRY;
            if m.bytes + size > MEMO_BUDGET {
                *m = Memo::default();
            }
            m.bytes += size;
            m.counts.insert(text.into(), n);
        }
        n
    }
}

/// Tokens in `text` under the encoding of `model`.
pub fn count_tokens(text: &str, model: &str) -> u64 {
    Encoding::for_model(model).count(text)
}

/// Loads the encoding of `model` now, so the first request that needs it does not pay for it.
pub fn warm(model: &str) {
    Encoding::for_model(model).bpe();
}

/// An estimate of the prompt tokens of a chat request: `body` is the request JSON (an object with
/// `messages` and optionally `tools`) or a bare `messages` array. Invalid JSON counts as zero
/// messages rather than failing, because this only ever fills in a missing provider count.
pub fn count_prompt_tokens(body: &[u8], model: &str) -> u64 {
    prompt::count(body, Encoding::for_model(model))
}

#[cfg(test)]
mod tests {
    use super::prompt::{PER_IMAGE, PER_MESSAGE, PER_NAME, REPLY_PRIMING};
    use super::*;

    #[test]
    fn model_families_pick_their_encoding() {
        assert_eq!(Encoding::for_model("gpt-4o-mini"), Encoding::O200k);
        assert_eq!(Encoding::for_model("gpt-4.1"), Encoding::O200k);
        assert_eq!(Encoding::for_model("gpt-4"), Encoding::Cl100k);
        assert_eq!(Encoding::for_model("gpt-3.5-turbo"), Encoding::Cl100k);
        assert_eq!(
            Encoding::for_model("text-embedding-3-small"),
            Encoding::Cl100k
        );
        assert_eq!(Encoding::for_model("openai-main/gpt-4"), Encoding::Cl100k);
        // Other families are estimated with the current OpenAI encoding.
        assert_eq!(Encoding::for_model("claude-haiku-4-5"), Encoding::O200k);
    }

    #[test]
    fn counts_match_openai_tokenizers() {
        // OpenAI cookbook's example: "t", "ik", "token", " is", " great", "!".
        assert_eq!(count_tokens("tiktoken is great!", "gpt-4"), 6);
        assert_eq!(count_tokens("hello world", "gpt-4o"), 2);
        assert_eq!(count_tokens("hello world", "gpt-4"), 2);
        assert_eq!(count_tokens("", "gpt-4o"), 0);
        // Special-token text is ordinary text inside a message.
        assert!(count_tokens("<|endoftext|>", "gpt-4o") > 1);
    }

    #[test]
    fn remembered_counts_are_the_counts() {
        let long = "word ".repeat(MEMO_MAX_TEXT / 4);
        for enc in [Encoding::Cl100k, Encoding::O200k] {
            for text in [
                "user",
                "You are terse.",
                "tiktoken is great!",
                long.as_str(),
            ] {
                let fresh = enc.bpe().count(text);
                assert_eq!(enc.count(text), fresh, "{text:.20}");
                assert_eq!(enc.count(text), fresh, "{text:.20} (remembered)");
            }
        }
    }

    #[test]
    fn prompt_tokens_follow_openai_chat_accounting() {
        let body = br#"{"model":"gpt-4o","messages":[
            {"role":"system","content":"You are terse."},
            {"role":"user","name":"ann","content":[{"type":"text","text":"hello world"},
              {"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#;
        let enc = Encoding::O200k;
        let expected = 2 * PER_MESSAGE
            + REPLY_PRIMING
            + enc.count("system")
            + enc.count("You are terse.")
            + enc.count("user")
            + PER_NAME
            + enc.count("ann")
            + enc.count("hello world")
            + PER_IMAGE;
        assert_eq!(count_prompt_tokens(body, "gpt-4o"), expected);
        // A bare messages array counts the same.
        let messages = br#"[{"role":"user","content":"hello world"}]"#;
        assert_eq!(
            count_prompt_tokens(messages, "gpt-4o"),
            PER_MESSAGE + REPLY_PRIMING + enc.count("user") + 2
        );
        assert_eq!(count_prompt_tokens(b"not json", "gpt-4o"), 0);
    }

    #[test]
    fn tools_and_tool_calls_count() {
        let plain = br#"{"messages":[{"role":"assistant","content":null}]}"#;
        let calls = br#"{"messages":[{"role":"assistant","content":null,"tool_calls":[
            {"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}],
            "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}"#;
        assert!(count_prompt_tokens(calls, "gpt-4o") > count_prompt_tokens(plain, "gpt-4o") + 10);
    }
}
