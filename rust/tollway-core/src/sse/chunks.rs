//! Writes OpenAI `chat.completion.chunk` events for the stream translators of providers that
//! do not speak OpenAI (Gemini, Bedrock): role, content, tool-call, finish and usage chunks.

use std::io::Write;

use crate::sse::Recorder;

const CHOICE_END: &[u8] = b",\"logprobs\":null,\"finish_reason\":null}]}\n\n";

#[derive(Debug)]
pub(crate) struct ChunkWriter {
    model: String,
    created: u64,
    include_usage: bool,
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,"choices":[`,
    /// built once, at the first chunk.
    prefix: Vec<u8>,
    role_sent: bool,
    /// Tool calls begun so far: the next one's OpenAI index.
    pub(crate) tool_calls: u32,
    /// Reasoning ("thinking") tokens the provider reported, included in completion tokens.
    pub(crate) reasoning_tokens: Option<u64>,
}

impl ChunkWriter {
    pub(crate) fn new(model: &str, created: u64, include_usage: bool) -> Self {
        Self {
            model: model.to_owned(),
            created,
            include_usage,
            prefix: Vec::new(),
            role_sent: false,
            tool_calls: 0,
            reasoning_tokens: None,
        }
    }

    /// Fixes the chunk id (the provider's response id when it has one); later calls are no-ops.
    pub(crate) fn start(&mut self, id: Option<&str>) {
        if !self.prefix.is_empty() {
            return;
        }
        let p = &mut self.prefix;
        p.extend_from_slice(b"data: {\"id\":");
        json_str(p, id.unwrap_or("chatcmpl-tollway"));
        let _ = write!(
            p,
            r#","object":"chat.completion.chunk","created":{},"model":"#,
            self.created
        );
        json_str(p, &self.model);
        p.extend_from_slice(br#","choices":["#);
    }

    /// The assistant role chunk, once, before anything else of the answer.
    pub(crate) fn role(&mut self, out: &mut Vec<u8>) {
        if !self.role_sent {
            self.role_sent = true;
            self.chunk(out, br#"{"role":"assistant","content":""}"#);
        }
    }

    pub(crate) fn content(
        &mut self,
        rec: &mut Recorder,
        now_ms: f64,
        out: &mut Vec<u8>,
        text: &str,
    ) {
        self.role(out);
        rec.token(now_ms, text);
        let mut delta = Vec::with_capacity(text.len() + 16);
        delta.extend_from_slice(br#"{"content":"#);
        json_str(&mut delta, text);
        delta.push(b'}');
        self.chunk(out, &delta);
    }

    /// Opens a tool call (id, name and possibly all of its arguments); returns its index.
    pub(crate) fn tool_call(
        &mut self,
        rec: &mut Recorder,
        now_ms: f64,
        out: &mut Vec<u8>,
        id: &str,
        name: &str,
        arguments: &str,
    ) -> u32 {
        self.role(out);
        let index = self.tool_calls;
        self.tool_calls += 1;
        rec.token(now_ms, name);
        rec.push_text(arguments);
        let mut delta = Vec::with_capacity(128 + arguments.len());
        let _ = write!(delta, r#"{{"tool_calls":[{{"index":{index},"id":"#);
        json_str(&mut delta, id);
        delta.extend_from_slice(br#","type":"function","function":{"name":"#);
        json_str(&mut delta, name);
        delta.extend_from_slice(br#","arguments":"#);
        json_str(&mut delta, arguments);
        delta.extend_from_slice(b"}}]}");
        self.chunk(out, &delta);
        index
    }

    /// More arguments of tool call `index`.
    pub(crate) fn tool_arguments(
        &mut self,
        rec: &mut Recorder,
        now_ms: f64,
        out: &mut Vec<u8>,
        index: u32,
        arguments: &str,
    ) {
        rec.token(now_ms, arguments);
        let mut delta = Vec::with_capacity(arguments.len() + 64);
        let _ = write!(
            delta,
            r#"{{"tool_calls":[{{"index":{index},"function":{{"arguments":"#
        );
        json_str(&mut delta, arguments);
        delta.extend_from_slice(b"}}]}");
        self.chunk(out, &delta);
    }

    /// The chunk with the (OpenAI) finish reason; recorded for the meter too.
    pub(crate) fn finish(&mut self, rec: &mut Recorder, out: &mut Vec<u8>, reason: &str) {
        self.role(out);
        rec.finish_reason = Some(reason.to_owned());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(br#"{"index":0,"delta":{},"logprobs":null,"finish_reason":""#);
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\"}]}\n\n");
    }

    /// The usage chunk (when the client asked for it) and `[DONE]`: the stream is complete.
    pub(crate) fn done(&mut self, rec: &mut Recorder, out: &mut Vec<u8>) {
        rec.done = true;
        if self.include_usage {
            self.start(None);
            let prompt = rec.usage.prompt_tokens.unwrap_or(0);
            let completion = rec.usage.completion_tokens.unwrap_or(0);
            out.extend_from_slice(&self.prefix);
            let _ = write!(
                out,
                r#"],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}"#,
                prompt + completion
            );
            if let Some(cached) = rec.usage.cached_tokens {
                let _ = write!(
                    out,
                    r#","prompt_tokens_details":{{"cached_tokens":{cached}}}"#
                );
            }
            if let Some(written) = rec.usage.cache_creation_tokens {
                let _ = write!(out, r#","cache_creation_input_tokens":{written}"#);
            }
            if let Some(reasoning) = self.reasoning_tokens {
                let _ = write!(
                    out,
                    r#","completion_tokens_details":{{"reasoning_tokens":{reasoning}}}"#
                );
            }
            out.extend_from_slice(b"}}\n\n");
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    /// One chunk with `delta` (a JSON object) as choice 0's delta.
    fn chunk(&mut self, out: &mut Vec<u8>, delta: &[u8]) {
        self.start(None);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(br#"{"index":0,"delta":"#);
        out.extend_from_slice(delta);
        out.extend_from_slice(CHOICE_END);
    }
}

pub(crate) fn json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}
