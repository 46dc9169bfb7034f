//! Gemini SSE and Bedrock event-stream answers through the meter: the same OpenAI chunks
//! however the network splits them, usage and finish reasons, errors, and arbitrary bytes.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use proptest::prelude::*;
use serde_json::Value;
use tollway_core::sse::{MeterOptions, SseMeter, StreamError, StreamFormat};

/// Gemini's `streamGenerateContent?alt=sse` for "Hello there." (CRLF-separated, no end marker).
const GEMINI: &str = concat!(
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hello\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 1,\"totalTokenCount\": 10},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"resp-1\"}\r\n\r\n",
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"thinking...\", \"thought\": true}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 1,\"totalTokenCount\": 10},\"responseId\": \"resp-1\"}\r\n\r\n",
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" there.\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 3,\"thoughtsTokenCount\": 4,\"cachedContentTokenCount\": 5,\"totalTokenCount\": 16},\"responseId\": \"resp-1\"}\r\n\r\n",
);

fn frame(event: &str, payload: &str) -> Vec<u8> {
    let message = Message::new_from_parts(
        vec![
            Header::new(":event-type", HeaderValue::String(event.to_owned().into())),
            Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ),
            Header::new(":message-type", HeaderValue::String("event".into())),
        ],
        payload.as_bytes().to_vec(),
    );
    let mut out = Vec::new();
    write_message_to(&message, &mut out).unwrap();
    out
}

/// Bedrock ConverseStream for "Hi" then a tool call, as binary event-stream frames.
fn bedrock() -> Vec<u8> {
    [
        frame("messageStart", r#"{"role":"assistant","p":"abcd"}"#),
        frame(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hi"},"p":"ab"}"#,
        ),
        frame("contentBlockStop", r#"{"contentBlockIndex":0}"#),
        frame(
            "contentBlockStart",
            r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tooluse_1","name":"get_weather"}}}"#,
        ),
        frame(
            "contentBlockDelta",
            r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\": "}}}"#,
        ),
        frame(
            "contentBlockDelta",
            r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"\"Paris\"}"}}}"#,
        ),
        frame("contentBlockStop", r#"{"contentBlockIndex":1}"#),
        frame("messageStop", r#"{"stopReason":"tool_use"}"#),
        frame(
            "metadata",
            r#"{"usage":{"inputTokens":20,"outputTokens":7,"totalTokens":27,"cacheReadInputTokens":4,"cacheWriteInputTokens":3},"metrics":{"latencyMs":5}}"#,
        ),
    ]
    .concat()
}

fn meter(format: StreamFormat) -> SseMeter {
    SseMeter::new(MeterOptions {
        format,
        model: "m".into(),
        started_ms: 0.0,
        strip_usage: false,
        include_usage: true,
        created: 1,
    })
}

/// The client's bytes, feeding `parts` in order, and the meter.
fn run(format: StreamFormat, parts: &[&[u8]]) -> (Vec<u8>, SseMeter) {
    let mut m = meter(format);
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        out.extend_from_slice(m.feed(p, i as f64));
    }
    out.extend_from_slice(m.finish(parts.len() as f64));
    (out, m)
}

fn chunks(out: &[u8]) -> Vec<Value> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: {"))
        .map(|e| serde_json::from_str(&format!("{{{e}")).unwrap())
        .collect()
}

#[test]
fn gemini_text_usage_and_end() {
    let (out, m) = run(StreamFormat::Gemini, &[GEMINI.as_bytes()]);
    assert!(out.ends_with(b"data: [DONE]\n\n"));
    let c = chunks(&out);
    assert_eq!(c[0]["id"], "resp-1");
    assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = c
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello there.");
    assert_eq!(c[c.len() - 2]["choices"][0]["finish_reason"], "stop");
    let usage = &c[c.len() - 1]["usage"];
    assert_eq!(usage["prompt_tokens"], 9);
    assert_eq!(usage["completion_tokens"], 7);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 5);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 4);
    assert_eq!(
        (m.prompt_tokens(), m.output_tokens(), m.error()),
        (Some(9), 7, None)
    );
    assert_eq!(m.response_id(), Some("resp-1"));
}

#[test]
fn gemini_every_split_gives_the_same_bytes() {
    let whole = run(StreamFormat::Gemini, &[GEMINI.as_bytes()]).0;
    let b = GEMINI.as_bytes();
    for i in 0..=b.len() {
        assert_eq!(
            run(StreamFormat::Gemini, &[&b[..i], &b[i..]]).0,
            whole,
            "split at {i}"
        );
    }
}

#[test]
fn gemini_cut_blocked_and_error_streams() {
    let b = GEMINI.as_bytes();
    let cut = GEMINI
        .find("data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" there")
        .unwrap();
    let (out, m) = run(StreamFormat::Gemini, &[&b[..cut]]);
    assert_eq!(m.error(), Some(&StreamError::Truncated));
    assert!(!out.ends_with(b"[DONE]\n\n"));
    let blocked = "data: {\"promptFeedback\": {\"blockReason\": \"SAFETY\"},\"usageMetadata\": {\"promptTokenCount\": 4}}\r\n\r\n";
    let (out, m) = run(StreamFormat::Gemini, &[blocked.as_bytes()]);
    assert_eq!(m.finish_reason(), Some("content_filter"));
    assert!(out.ends_with(b"data: [DONE]\n\n"));
    let error = "data: {\"error\": {\"code\": 429, \"message\": \"Quota\", \"status\": \"RESOURCE_EXHAUSTED\"}}\r\n\r\n";
    let (_, m) = run(StreamFormat::Gemini, &[error.as_bytes()]);
    assert_eq!(
        m.error(),
        Some(&StreamError::Upstream {
            kind: Some("RESOURCE_EXHAUSTED".into()),
            message: "Quota".into()
        })
    );
}

#[test]
fn bedrock_frames_translate_whatever_the_split() {
    let b = bedrock();
    let (whole, m) = run(StreamFormat::Bedrock, &[&b]);
    assert!(whole.ends_with(b"data: [DONE]\n\n"));
    let c = chunks(&whole);
    assert_eq!(c[1]["choices"][0]["delta"]["content"], "Hi");
    let call = &c[2]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(
        (&call["id"], &call["function"]["name"]),
        (&Value::from("tooluse_1"), &Value::from("get_weather"))
    );
    let args: String = c[2..5]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(args, "{\"city\": \"Paris\"}");
    assert_eq!(m.finish_reason(), Some("tool_calls"));
    assert_eq!(
        (
            m.prompt_tokens(),
            m.output_tokens(),
            m.usage().cached_tokens,
            m.usage().cache_creation_tokens
        ),
        (Some(27), 7, Some(4), Some(3))
    );
    let usage = &c[c.len() - 1]["usage"];
    assert_eq!(usage["prompt_tokens"], 27);
    assert_eq!(usage["cache_creation_input_tokens"], 3);
    for i in 0..=b.len() {
        assert_eq!(
            run(StreamFormat::Bedrock, &[&b[..i], &b[i..]]).0,
            whole,
            "split at {i}"
        );
    }
    let bytes: Vec<&[u8]> = b.chunks(1).collect();
    assert_eq!(run(StreamFormat::Bedrock, &bytes).0, whole);
}

#[test]
fn bedrock_bad_crc_exception_and_cut_streams_fail() {
    let mut b = bedrock();
    let n = b.len();
    b[n - 20] ^= 1;
    assert!(run(StreamFormat::Bedrock, &[&b]).1.error().is_some());
    let b = bedrock();
    let (out, m) = run(StreamFormat::Bedrock, &[&b[..b.len() / 2]]);
    assert_eq!(m.error(), Some(&StreamError::Truncated));
    assert!(!out.ends_with(b"[DONE]\n\n"));
    let exception = Message::new_from_parts(
        vec![
            Header::new(
                ":exception-type",
                HeaderValue::String("throttlingException".into()),
            ),
            Header::new(":message-type", HeaderValue::String("exception".into())),
        ],
        br#"{"message":"Too many tokens"}"#.to_vec(),
    );
    let mut frames = frame("messageStart", r#"{"role":"assistant"}"#);
    write_message_to(&exception, &mut frames).unwrap();
    let (_, m) = run(StreamFormat::Bedrock, &[&frames]);
    assert_eq!(
        m.error(),
        Some(&StreamError::Upstream {
            kind: Some("throttlingException".into()),
            message: "Too many tokens".into()
        })
    );
}

#[test]
fn bedrock_json_mode_tool_input_is_the_answer() {
    let b = [
        frame("messageStart", r#"{"role":"assistant"}"#),
        frame(
            "contentBlockStart",
            &format!(
                r#"{{"contentBlockIndex":0,"start":{{"toolUse":{{"toolUseId":"t1","name":"{}"}}}}}}"#,
                tollway_core::sse::bedrock::JSON_TOOL
            ),
        ),
        frame(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"toolUse":{"input":"{\"city\": "}}}"#,
        ),
        frame(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"toolUse":{"input":"\"Paris\"}"}}}"#,
        ),
        frame("contentBlockStop", r#"{"contentBlockIndex":0}"#),
        frame("messageStop", r#"{"stopReason":"tool_use"}"#),
        frame(
            "metadata",
            r#"{"usage":{"inputTokens":20,"outputTokens":7,"totalTokens":27}}"#,
        ),
    ]
    .concat();
    let (out, m) = run(StreamFormat::Bedrock, &[&b]);
    let c = chunks(&out);
    let text: String = c
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "{\"city\": \"Paris\"}");
    assert!(c
        .iter()
        .all(|c| c["choices"][0]["delta"]["tool_calls"].is_null()));
    assert_eq!(m.finish_reason(), Some("stop"));
}

/// (event name, data) of each Anthropic event.
fn anthropic_events(out: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .split("\n\n")
        .filter(|b| !b.is_empty())
        .map(|block| {
            let (name, data) = block.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap().to_owned();
            (
                name,
                serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn gemini_and_bedrock_streams_for_anthropic_clients() {
    let (out, m) = run(StreamFormat::GeminiToAnthropic, &[GEMINI.as_bytes()]);
    let events = anthropic_events(&out);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[0].1["message"]["id"], "msg_resp-1");
    assert_eq!(events[0].1["message"]["model"], "m");
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello there.");
    let delta = &events[5].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    // 9 prompt tokens, 5 of them read from the cache; 3 answer + 4 thinking tokens.
    assert_eq!(delta["usage"]["input_tokens"], 4);
    assert_eq!(delta["usage"]["cache_read_input_tokens"], 5);
    assert_eq!(delta["usage"]["output_tokens"], 7);
    assert_eq!(
        (m.prompt_tokens(), m.output_tokens(), m.done()),
        (Some(9), 7, true)
    );
    // Metered once: the token events are Gemini's two text parts, not doubled.
    assert!(m.itl_mean_ms().is_some() && m.text() == "Hellothinking... there.");
    let b = GEMINI.as_bytes();
    for i in 0..=b.len() {
        let split = run(StreamFormat::GeminiToAnthropic, &[&b[..i], &b[i..]]).0;
        assert_eq!(split, out, "split at {i}");
    }

    let b = bedrock();
    let (out, m) = run(StreamFormat::BedrockToAnthropic, &[&b]);
    let events = anthropic_events(&out);
    let blocks: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| &d["content_block"])
        .collect();
    assert_eq!(blocks[0]["type"], "text");
    assert_eq!(
        (&blocks[1]["type"], &blocks[1]["id"], &blocks[1]["name"]),
        (
            &Value::from("tool_use"),
            &Value::from("tooluse_1"),
            &Value::from("get_weather")
        )
    );
    let json: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(json, "{\"city\": \"Paris\"}");
    let (name, delta) = &events[events.len() - 2];
    assert_eq!(name, "message_delta");
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["input_tokens"], 20);
    assert_eq!(delta["usage"]["cache_read_input_tokens"], 4);
    assert_eq!(delta["usage"]["cache_creation_input_tokens"], 3);
    assert_eq!(delta["usage"]["output_tokens"], 7);
    assert_eq!(events[events.len() - 1].0, "message_stop");
    assert_eq!((m.prompt_tokens(), m.output_tokens()), (Some(27), 7));
    let bytes: Vec<&[u8]> = b.chunks(1).collect();
    assert_eq!(run(StreamFormat::BedrockToAnthropic, &bytes).0, out);
    // A cut stream never gets its message_stop.
    let (out, m) = run(StreamFormat::BedrockToAnthropic, &[&b[..b.len() / 2]]);
    assert_eq!(m.error(), Some(&StreamError::Truncated));
    assert!(!String::from_utf8(out).unwrap().contains("message_stop"));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048), cut in 0usize..2048) {
        for format in [
            StreamFormat::Gemini,
            StreamFormat::Bedrock,
            StreamFormat::GeminiToAnthropic,
            StreamFormat::BedrockToAnthropic,
        ] {
            let cut = cut.min(data.len());
            let (_, m) = run(format, &[&data[..cut], &data[cut..]]);
            prop_assert!(m.done() || m.error().is_some() || m.finish_reason().is_some());
        }
    }
}
