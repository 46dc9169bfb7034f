//! Local token counts for when a provider reports none: OpenAI's BPE encodings (cl100k, o200k)
//! with the tables `tiktoken-rs` ships, each loaded once on first use into a compact
//! counting-only form (`bpe`). For other model
//! families the same encodings are an estimate, and every count from here is marked estimated
//! by its callers.

mod bpe;

use std::sync::OnceLock;

use serde_json::Value;

use bpe::Bpe;

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

    /// The table, built on first use (tens of milliseconds) and shared for the process.
    fn bpe(self) -> &'static Bpe {
        static CL100K: OnceLock<Bpe> = OnceLock::new();
        static O200K: OnceLock<Bpe> = OnceLock::new();
        let (cell, table, pattern) = match self {
            Self::Cl100k => (&CL100K, bpe::CL100K, CL100K_PATTERN),
            Self::O200k => (&O200K, bpe::O200K, tiktoken_rs::O200K_BASE_PAT_STR),
        };
        cell.get_or_init(|| {
            // The pattern is the crate's own (and tested): a failure is a build defect.
            #[allow(clippy::expect_used)]
            Bpe::new(table, pattern).expect("the split pattern compiles")
        })
    }

    /// Tokens in `text`; special-token text counts as ordinary text, as a provider would see it
    /// inside a message.
    pub fn count(self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        self.bpe().count(text)
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

// OpenAI's published accounting for chat prompts: each message costs a few framing tokens,
// a `name` one more, and the reply is primed with three.
const PER_MESSAGE: u64 = 3;
const PER_NAME: u64 = 1;
const REPLY_PRIMING: u64 = 3;
// An image part is billed by size and detail, which the gateway does not decode; this is
// OpenAI's price of a low-detail image, a floor rather than a guess at the real count.
const PER_IMAGE: u64 = 85;

/// An estimate of the prompt tokens of a chat request: `body` is the request JSON (an object with
/// `messages` and optionally `tools`) or a bare `messages` array. Invalid JSON counts as zero
/// messages rather than failing, because this only ever fills in a missing provider count.
pub fn count_prompt_tokens(body: &[u8], model: &str) -> u64 {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    let enc = Encoding::for_model(model);
    let (messages, tools) = match &value {
        Value::Array(_) => (Some(&value), None),
        Value::Object(o) => (o.get("messages"), o.get("tools")),
        _ => (None, None),
    };
    let mut total = 0;
    if let Some(Value::Array(messages)) = messages {
        for m in messages {
            total += PER_MESSAGE + message_tokens(enc, m);
        }
        total += REPLY_PRIMING;
    }
    if let Some(tools @ Value::Array(list)) = tools {
        if !list.is_empty() {
            // Providers render tool schemas into the prompt in their own format; the JSON text
            // is a close stand-in for its size.
            total += enc.count(&tools.to_string());
        }
    }
    total
}

fn message_tokens(enc: Encoding, m: &Value) -> u64 {
    let Value::Object(m) = m else {
        return 0;
    };
    let mut n = 0;
    if let Some(Value::String(role)) = m.get("role") {
        n += enc.count(role);
    }
    if let Some(Value::String(name)) = m.get("name") {
        n += PER_NAME + enc.count(name);
    }
    n += content_tokens(enc, m.get("content"));
    if let Some(Value::Array(calls)) = m.get("tool_calls") {
        for call in calls {
            if let Some(Value::Object(f)) = call.get("function") {
                for key in ["name", "arguments"] {
                    if let Some(Value::String(s)) = f.get(key) {
                        n += enc.count(s);
                    }
                }
            }
        }
    }
    n
}

fn content_tokens(enc: Encoding, content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(s)) => enc.count(s),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("image_url" | "image" | "input_audio") => PER_IMAGE,
                _ => match p.get("text") {
                    Some(Value::String(s)) => enc.count(s),
                    _ => 0,
                },
            })
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
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
