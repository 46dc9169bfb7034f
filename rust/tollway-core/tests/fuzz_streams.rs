//! Fuzz regression targets for the stream parsers, run by `cargo test` (see `fuzz.rs` for the
//! approach and the long-run command): the SSE parser and meter under every stream format (the Gemini and Bedrock
//! translations to Anthropic events included),
//! the Anthropic translator, and the Bedrock binary event-stream decoder.
//!
//! What must hold: no input panics; what the client gets and what is metered (text, tokens,
//! usage, finish, error) does not depend on where the network split the bytes; a well-formed
//! stream is translated into well-formed chunks carrying exactly its text; a Bedrock frame with
//! any byte changed is rejected (the CRCs cover every byte). Corpora: `tests/corpus/sse/`
//! (any SSE body, replayed under every SSE format), `tests/corpus/anthropic_sse/` and
//! `tests/corpus/bedrock/` (binary frames; `*.ok` must pass and `*.err` must be rejected).
#![allow(clippy::unwrap_used)]

mod common;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use proptest::prelude::*;
use serde_json::{json, Value};
use tollway_core::sse::{
    Event, Flow, MeterOptions, SseMeter, SseParser, StreamError, StreamFormat, Usage,
};

use common::{cases, corpus, split_at, spread_cuts};

const DONE: &[u8] = b"data: [DONE]\n\n";

const SSE_FORMATS: [StreamFormat; 7] = [
    StreamFormat::OpenAi,
    StreamFormat::Anthropic,
    StreamFormat::AnthropicRaw,
    StreamFormat::OpenAiToAnthropic,
    StreamFormat::Responses,
    StreamFormat::Gemini,
    StreamFormat::GeminiToAnthropic,
];

fn meter(format: StreamFormat, strip_usage: bool) -> SseMeter {
    SseMeter::new(MeterOptions {
        format,
        model: "gpt-4o-mini".to_owned(),
        started_ms: 0.0,
        strip_usage,
        include_usage: true,
        created: 1_700_000_000,
    })
}

/// The client's bytes, shown escaped in a failure.
#[derive(PartialEq)]
struct Bytes(Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// Everything a caller observes except timings (every chunk arrives at the same instant).
#[derive(Debug, PartialEq)]
struct Seen {
    out: Bytes,
    text: String,
    output_tokens: u64,
    usage: Usage,
    estimated: bool,
    finish: Option<String>,
    done: bool,
    error: Option<StreamError>,
    response_id: Option<String>,
}

fn run(format: StreamFormat, strip_usage: bool, parts: &[&[u8]]) -> Seen {
    let mut m = meter(format, strip_usage);
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(m.feed(p, 1.0));
        assert!(m.pending() <= tollway_core::sse::MAX_EVENT_BYTES);
    }
    out.extend_from_slice(m.finish(1.0));
    Seen {
        out: Bytes(out),
        text: m.text().to_owned(),
        output_tokens: m.output_tokens(),
        usage: m.usage().clone(),
        estimated: m.usage_estimated(),
        finish: m.finish_reason().map(str::to_owned),
        done: m.done(),
        error: m.error().cloned(),
        response_id: m.response_id().map(str::to_owned),
    }
}

/// Fed whole and fed cut at `cuts`, the stream gives the same result; returns it.
fn check_split(format: StreamFormat, strip_usage: bool, bytes: &[u8], cuts: &[usize]) -> Seen {
    let whole = run(format, strip_usage, &[bytes]);
    let split = run(format, strip_usage, &split_at(bytes, cuts));
    assert_eq!(split, whole, "{format:?} split at {cuts:?}");
    // An end the client can tell from a cut: never both a `[DONE]` and an error.
    if whole.error.is_some() {
        assert!(!sends_done(format, &whole.out.0), "{format:?}: {whole:?}");
    }
    whole
}

/// An SSE client reading `out` sees the end of an answer: `[DONE]` for an OpenAI client, an
/// event whose data is a `message_stop` for an Anthropic one.
fn sends_done(format: StreamFormat, out: &[u8]) -> bool {
    let anthropic_client = matches!(
        format,
        StreamFormat::AnthropicRaw
            | StreamFormat::OpenAiToAnthropic
            | StreamFormat::GeminiToAnthropic
            | StreamFormat::BedrockToAnthropic
    );
    let mut parser = SseParser::new(usize::MAX);
    let mut done = false;
    let mut on_event = |e: &Event<'_>| {
        done |= match e.data {
            Some(d) if anthropic_client => serde_json::from_slice::<Value>(d)
                .is_ok_and(|v| v.get("type") == Some(&json!("message_stop"))),
            Some(d) => d == b"[DONE]",
            None => false,
        };
        Flow::Drop
    };
    parser.feed(out, &mut Vec::new(), &mut on_event).unwrap();
    parser.finish(&mut Vec::new(), &mut on_event).unwrap();
    done
}

/// Chunks the client gets from a translated stream: each `data:` is JSON or `[DONE]`.
fn openai_chunks(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).unwrap();
    let mut chunks = Vec::new();
    for event in text.split_terminator("\n\n") {
        let data = event.strip_prefix("data: ").unwrap();
        assert!(!data.contains(['\n', '\r']), "a data line broken: {data:?}");
        if data != "[DONE]" {
            chunks.push(serde_json::from_str(data).unwrap());
        }
    }
    chunks
}

/// The text and the tool arguments (by index) of OpenAI chunks.
fn content_of(chunks: &[Value]) -> (String, Vec<String>) {
    let (mut text, mut tools) = (String::new(), Vec::<String>::new());
    for c in chunks {
        let Some(delta) = c.pointer("/choices/0/delta") else {
            continue;
        };
        if let Some(t) = delta.get("content").and_then(Value::as_str) {
            text.push_str(t);
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let i = call["index"].as_u64().unwrap() as usize;
            if tools.len() <= i {
                tools.resize(i + 1, String::new());
            }
            if let Some(a) = call.pointer("/function/arguments").and_then(Value::as_str) {
                tools[i].push_str(a);
            }
        }
    }
    (text, tools)
}

/// Any SSE body: the format's words, line endings of every kind, and arbitrary bytes.
fn arb_sse() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => prop::sample::select(vec![
            "data: ", "data:", "event: ", "event: error", "id: 1", ": ping", "retry: 5",
            "\n", "\r", "\r\n", "\n\n", "\r\n\r\n", "\r\r", "[DONE]", "{", "}", "\"",
            "event: message_start", "event: content_block_delta", "event: message_stop",
            r#"{"choices":[{"delta":{"content":"x"}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{"}}]}}]}"#,
            r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":4}}}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"f"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"é"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"partial_json":"{\""}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}"#,
            r#"{"type":"message_stop"}"#,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
            r#"{"type":"response.completed","response":{"id":"r","usage":{"input_tokens":1,"output_tokens":1}}}"#,
            r#"{"type":"response.output_text.delta","delta":"hi"}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1}}"#,
        ]).prop_map(|s| s.as_bytes().to_vec()),
        2 => "\\PC{0,8}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..16),
    ];
    prop::collection::vec(piece, 0..48).prop_map(|v| v.concat())
}

/// OpenAI's stream of the given content deltas, with usage, and `eol` ending lines.
fn openai_stream(parts: &[String], usage: Option<(u64, u64)>, eol: &str) -> String {
    let mut s = String::new();
    let mut event = |v: Value| s.push_str(&format!("data: {v}{eol}{eol}"));
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-f", "object": "chat.completion.chunk", "created": 1,
               "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    event(chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    for p in parts {
        event(chunk(json!({"content": p}), Value::Null));
    }
    event(chunk(json!({}), json!("stop")));
    if let Some((p, c)) = usage {
        event(
            json!({"id": "chatcmpl-f", "object": "chat.completion.chunk", "created": 1,
                     "model": "gpt-4o-mini", "choices": [],
                     "usage": {"prompt_tokens": p, "completion_tokens": c}}),
        );
    }
    s.push_str(&format!("data: [DONE]{eol}{eol}"));
    s
}

/// One Anthropic Messages event, as the API writes it.
fn anthropic_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// A block of an Anthropic answer: text deltas, or a tool call's input pieces.
#[derive(Clone, Debug)]
enum Block {
    Text(Vec<String>),
    Tool(String, Vec<String>),
    Thinking(Vec<String>),
}

fn arb_block() -> impl Strategy<Value = Block> {
    let pieces = || prop::collection::vec("\\PC{0,12}|[\\s\"\\\\\u{2028}\u{0}-\u{1f}]{0,3}", 0..6);
    prop_oneof![
        3 => pieces().prop_map(Block::Text),
        1 => ("[a-z_]{1,12}", pieces()).prop_map(|(n, p)| Block::Tool(n, p)),
        1 => pieces().prop_map(Block::Thinking),
    ]
}

/// A well-formed Anthropic stream of `blocks` (pings between some events).
fn anthropic_stream(blocks: &[Block], input: u64, output: u64) -> String {
    let mut s = anthropic_event(
        "message_start",
        &json!({"type": "message_start", "message": {"id": "msg_f", "type": "message",
            "role": "assistant", "content": [], "usage": {"input_tokens": input, "output_tokens": 1}}}),
    );
    let mut stop = "end_turn";
    for (i, b) in blocks.iter().enumerate() {
        let (start, deltas): (Value, Vec<Value>) = match b {
            Block::Text(p) => (
                json!({"type": "text", "text": ""}),
                p.iter()
                    .map(|t| json!({"type": "text_delta", "text": t}))
                    .collect(),
            ),
            Block::Tool(name, p) => {
                stop = "tool_use";
                (
                    json!({"type": "tool_use", "id": format!("toolu_{i}"), "name": name, "input": {}}),
                    p.iter()
                        .map(|t| json!({"type": "input_json_delta", "partial_json": t}))
                        .collect(),
                )
            }
            Block::Thinking(p) => (
                json!({"type": "thinking", "thinking": ""}),
                p.iter()
                    .map(|t| json!({"type": "thinking_delta", "thinking": t}))
                    .collect(),
            ),
        };
        s += &anthropic_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": i, "content_block": start}),
        );
        for d in deltas {
            s += &anthropic_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": i, "delta": d}),
            );
        }
        if i % 2 == 1 {
            s += &anthropic_event("ping", &json!({"type": "ping"}));
        }
        s += &anthropic_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": i}),
        );
    }
    s += &anthropic_event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": {"output_tokens": output}}),
    );
    s + &anthropic_event("message_stop", &json!({"type": "message_stop"}))
}

/// What a well-formed Anthropic stream of `blocks` must become.
fn check_anthropic(blocks: &[Block], input: u64, output: u64, cuts: &[usize]) {
    let stream = anthropic_stream(blocks, input, output);
    let seen = check_split(StreamFormat::Anthropic, false, stream.as_bytes(), cuts);
    assert_eq!(seen.error, None);
    assert!(seen.done);
    assert_eq!(seen.usage.prompt_tokens, Some(input));
    assert_eq!(seen.output_tokens, output);
    assert!(seen.out.0.ends_with(DONE));
    let (text, tools) = content_of(&openai_chunks(&seen.out.0));
    let want_text: String = blocks
        .iter()
        .filter_map(|b| match b {
            Block::Text(p) => Some(p.concat()),
            _ => None,
        })
        .collect();
    let want_tools: Vec<String> = blocks
        .iter()
        .filter_map(|b| match b {
            Block::Tool(_, p) => Some(p.concat()),
            _ => None,
        })
        .collect();
    assert_eq!(text, want_text);
    assert_eq!(tools, want_tools);
    // Forwarded as it is, the stream reaches an Anthropic client byte for byte.
    let raw = check_split(StreamFormat::AnthropicRaw, false, stream.as_bytes(), cuts);
    assert_eq!(raw.out.0, stream.as_bytes());
    assert_eq!(raw.output_tokens, output);
}

/// One Bedrock event-stream frame.
fn frame(message_type: &str, event: &str, payload: &[u8]) -> Vec<u8> {
    let type_header = if message_type == "exception" {
        ":exception-type"
    } else {
        ":event-type"
    };
    let message = Message::new_from_parts(
        vec![
            Header::new(type_header, HeaderValue::String(event.to_owned().into())),
            Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ),
            Header::new(
                ":message-type",
                HeaderValue::String(message_type.to_owned().into()),
            ),
        ],
        payload.to_vec(),
    );
    let mut out = Vec::new();
    write_message_to(&message, &mut out).unwrap();
    out
}

/// A well-formed ConverseStream answer of text pieces, then a tool call, with usage.
fn bedrock_stream(text: &[String], tool_input: &[String], usage: (u64, u64)) -> Vec<u8> {
    let ev = |name: &str, v: Value| frame("event", name, v.to_string().as_bytes());
    let mut s = ev("messageStart", json!({"role": "assistant"}));
    for t in text {
        s.extend(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": t}}),
        ));
    }
    s.extend(ev("contentBlockStop", json!({"contentBlockIndex": 0})));
    let stop = if tool_input.is_empty() {
        "end_turn"
    } else {
        s.extend(ev(
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}),
        ));
        for t in tool_input {
            s.extend(ev(
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": t}}}),
            ));
        }
        "tool_use"
    };
    s.extend(ev("messageStop", json!({"stopReason": stop})));
    s.extend(ev(
        "metadata",
        json!({"usage": {"inputTokens": usage.0, "outputTokens": usage.1}}),
    ));
    s
}

/// Every SSE format, fed the body whole and cut at `cuts`: the same result.
fn check_sse(bytes: &[u8], cuts: &[usize], strip_usage: bool) {
    for format in SSE_FORMATS {
        check_split(format, strip_usage, bytes, cuts);
    }
}

/// The Bedrock stream for an OpenAI client (returned) and for an Anthropic one: both the
/// same wherever the split, both failing or neither.
fn check_bedrock(bytes: &[u8], cuts: &[usize]) -> Seen {
    let seen = check_split(StreamFormat::Bedrock, false, bytes, cuts);
    openai_chunks(&seen.out.0);
    let anthropic = check_split(StreamFormat::BedrockToAnthropic, false, bytes, cuts);
    assert_eq!(
        anthropic.error.is_some(),
        seen.error.is_some(),
        "{anthropic:?}"
    );
    seen
}

#[test]
fn sse_corpus() {
    for (path, raw) in corpus("sse") {
        println!("{}", path.display());
        for cut in spread_cuts(raw.len(), 64) {
            check_sse(&raw, &[cut], cut % 2 == 0);
        }
    }
}

#[test]
fn anthropic_sse_corpus() {
    for (path, raw) in corpus("anthropic_sse") {
        println!("{}", path.display());
        for cut in spread_cuts(raw.len(), 128) {
            let seen = check_split(StreamFormat::Anthropic, false, &raw, &[cut, cut / 2]);
            openai_chunks(&seen.out.0);
            check_split(StreamFormat::AnthropicRaw, false, &raw, &[cut]);
        }
    }
}

#[test]
fn bedrock_corpus() {
    for (path, raw) in corpus("bedrock") {
        println!("{}", path.display());
        for cut in spread_cuts(raw.len(), 128) {
            check_bedrock(&raw, &[cut, cut / 3]);
        }
        // A `.err` file must be rejected; a `.ok` file is a good stream, and changing any
        // byte of it must be an error.
        let ext = path.extension().and_then(|e| e.to_str());
        if ext == Some("err") {
            assert!(check_bedrock(&raw, &[]).error.is_some());
        }
        if ext == Some("ok") {
            assert_eq!(check_bedrock(&raw, &[]).error, None);
            for at in spread_cuts(raw.len() - 1, 256) {
                let mut bad = raw.clone();
                bad[at] ^= 0x01;
                let seen = check_bedrock(&bad, &[at]);
                assert!(seen.error.is_some(), "byte {at} changed, not rejected");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn sse_any_body_any_split(
        body in arb_sse(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        strip in any::<bool>(),
    ) {
        check_sse(&body, &cuts, strip);
    }

    #[test]
    fn sse_arbitrary_bytes(
        body in prop::collection::vec(any::<u8>(), 0..1024),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        check_sse(&body, &cuts, false);
    }

    /// A well-formed OpenAI stream: forwarded byte for byte, its text metered exactly.
    #[test]
    fn openai_stream_text_and_usage(
        parts in prop::collection::vec("\\PC{0,16}|[\\s\"\\\\\u{0}-\u{1f}]{0,3}", 0..16),
        usage in prop::option::of((0u64..100_000, 0u64..100_000)),
        eol in prop::sample::select(vec!["\n", "\r\n", "\r"]),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let stream = openai_stream(&parts, usage, eol);
        let seen = check_split(StreamFormat::OpenAi, false, stream.as_bytes(), &cuts);
        prop_assert_eq!(&seen.error, &None);
        prop_assert!(seen.done);
        prop_assert_eq!(&seen.out.0, &stream.as_bytes().to_vec());
        prop_assert_eq!(&seen.text, &parts.concat());
        if let Some((p, c)) = usage {
            prop_assert_eq!(seen.usage.prompt_tokens, Some(p));
            prop_assert_eq!(seen.output_tokens, c);
        }
        // The same answer translated for an Anthropic client keeps its text.
        let to_anthropic = check_split(StreamFormat::OpenAiToAnthropic, false, stream.as_bytes(), &cuts);
        prop_assert_eq!(&to_anthropic.error, &None);
        prop_assert_eq!(&to_anthropic.text, &parts.concat());
    }

    #[test]
    fn anthropic_stream_translates_exactly(
        blocks in prop::collection::vec(arb_block(), 0..5),
        input in 0u64..1_000_000,
        output in 0u64..1_000_000,
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        check_anthropic(&blocks, input, output, &cuts);
    }

    /// Anthropic events in any order, repeated, dropped or broken.
    #[test]
    fn anthropic_events_any_order(
        blocks in prop::collection::vec(arb_block(), 0..4),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
        junk in prop::collection::vec(arb_sse(), 0..3),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let stream = anthropic_stream(&blocks, 5, 7);
        let events: Vec<&str> = stream.split_inclusive("\n\n").collect();
        let mut body: Vec<u8> = picks.iter().flat_map(|i| i.get(&events).bytes()).collect();
        for j in &junk {
            body.extend_from_slice(j);
        }
        let seen = check_split(StreamFormat::Anthropic, false, &body, &cuts);
        openai_chunks(&seen.out.0);
        check_split(StreamFormat::AnthropicRaw, true, &body, &cuts);
    }

    #[test]
    fn bedrock_arbitrary_bytes(
        body in prop::collection::vec(any::<u8>(), 0..1024),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        check_bedrock(&body, &cuts);
    }

    /// A well-formed stream: its text and tool input exactly; any byte changed: rejected.
    #[test]
    fn bedrock_frames_and_mutations(
        text in prop::collection::vec("\\PC{0,16}", 0..6),
        tool in prop::collection::vec("[{}\":a-z0-9 ]{0,12}", 0..4),
        usage in (0u64..100_000, 0u64..100_000),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let stream = bedrock_stream(&text, &tool, usage);
        let seen = check_bedrock(&stream, &cuts);
        prop_assert_eq!(&seen.error, &None);
        prop_assert!(seen.done);
        prop_assert_eq!(seen.usage.prompt_tokens, Some(usage.0));
        prop_assert_eq!(seen.output_tokens, usage.1);
        let (got_text, got_tools) = content_of(&openai_chunks(&seen.out.0));
        prop_assert_eq!(got_text, text.concat());
        let want_tools: Vec<String> = if tool.is_empty() { vec![] } else { vec![tool.concat()] };
        prop_assert_eq!(got_tools, want_tools);

        let mut bad = stream.clone();
        bad[at.index(stream.len())] ^= flip;
        let seen = check_bedrock(&bad, &cuts);
        prop_assert!(seen.error.is_some(), "byte {} changed, not rejected", at.index(stream.len()));
    }

    /// Frames with arbitrary payloads and types: never a panic, and the same whatever the split.
    #[test]
    fn bedrock_arbitrary_frames(
        frames in prop::collection::vec(
            (
                prop::sample::select(vec!["event", "exception", "error", ""]),
                prop::sample::select(vec!["messageStart", "contentBlockStart", "contentBlockDelta",
                    "contentBlockStop", "messageStop", "metadata", "throttlingException", "x"]),
                prop_oneof![
                    "\\PC{0,24}".prop_map(String::into_bytes),
                    Just(br#"{"contentBlockIndex":0,"delta":{"text":"a"}}"#.to_vec()),
                    Just(br#"{"stopReason":"max_tokens"}"#.to_vec()),
                    Just(br#"{"usage":{"inputTokens":1,"outputTokens":2}}"#.to_vec()),
                    Just(br#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"t","name":"f"}}}"#.to_vec()),
                    Just(br#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{"}}}"#.to_vec()),
                ],
            ),
            0..12,
        ),
        tail in prop::collection::vec(any::<u8>(), 0..24),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut body: Vec<u8> = frames.iter().flat_map(|(m, e, p)| frame(m, e, p)).collect();
        body.extend_from_slice(&tail);
        check_bedrock(&body, &cuts);
    }
}
