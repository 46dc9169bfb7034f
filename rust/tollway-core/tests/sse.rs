//! The stream meter against recorded streams: identical results however the network splits
//! them, usage stripping, Anthropic translation, error and truncation, and arbitrary bytes.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::split_at;
use proptest::prelude::*;
use serde_json::Value;
use tollway_core::sse::{MeterOptions, SseMeter, StreamError, StreamFormat};
use tollway_core::tokens::count_tokens;

/// OpenAI's stream for "Hello there, friend." with `stream_options.include_usage`.
const OPENAI: &str = concat!(
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    ": keep-alive\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there,\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" friend \\\"\\u00e9\\\".\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
    "data: [DONE]\n\n",
);

const DONE: &str = "data: [DONE]\n\n";

/// The usage-only event of [`OPENAI`], which a client that did not ask for usage must not see.
fn openai_usage_event() -> &'static str {
    let start = OPENAI.find("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],").unwrap();
    let end = OPENAI.find("data: [DONE]").unwrap();
    &OPENAI[start..end]
}

/// Anthropic's stream for "Hello there." as the Messages API sends it.
const ANTHROPIC_TEXT: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-haiku-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":3,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\n",
    "data: {\"type\":\"ping\"}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" there.\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":3}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

/// Anthropic's stream for a text block then a `get_weather` tool call with streamed input.
const ANTHROPIC_TOOL: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-opus-4-5\",\"content\":[],\"usage\":{\"input_tokens\":50,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Checking.\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Par\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"is\\\"}\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":20}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

const ANTHROPIC_ERROR: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_3\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
    "event: error\n",
    "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
);

fn meter(format: StreamFormat, strip_usage: bool, include_usage: bool) -> SseMeter {
    SseMeter::new(MeterOptions {
        format,
        model: "gpt-4o-mini".to_owned(),
        started_ms: 1000.0,
        strip_usage,
        include_usage,
        created: 1_700_000_000,
    })
}

/// Everything a caller can observe, for comparing runs.
#[derive(Debug, PartialEq)]
struct Seen {
    out: Vec<u8>,
    ttft: Option<f64>,
    itl_mean: Option<f64>,
    itl_max: Option<f64>,
    output_tokens: u64,
    prompt_tokens: Option<u64>,
    estimated: bool,
    finish: Option<String>,
    done: bool,
    error: Option<StreamError>,
}

/// Feeds `chunks`, the i-th at time 1000 + 10 * (i + 1) ms, then finishes.
fn run(mut m: SseMeter, chunks: &[&[u8]]) -> Seen {
    let mut out = Vec::new();
    let mut now = 1000.0;
    for c in chunks {
        now += 10.0;
        out.extend_from_slice(m.feed(c, now));
    }
    out.extend_from_slice(m.finish(now));
    Seen {
        out,
        ttft: m.ttft_ms(),
        itl_mean: m.itl_mean_ms(),
        itl_max: m.itl_max_ms(),
        output_tokens: m.output_tokens(),
        prompt_tokens: m.prompt_tokens(),
        estimated: m.usage_estimated(),
        finish: m.finish_reason().map(str::to_owned),
        done: m.done(),
        error: m.error().cloned(),
    }
}

/// Runs split into whole events (what the network usually does), each event one chunk.
fn by_event(stream: &str) -> Vec<&[u8]> {
    stream.split_inclusive("\n\n").map(str::as_bytes).collect()
}

/// The same run with every chunk fed at one instant, so timings do not depend on the split.
fn run_at_once(m: SseMeter, chunks: &[&[u8]]) -> Seen {
    let mut m = m;
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(m.feed(c, 1005.0));
    }
    out.extend_from_slice(m.finish(1005.0));
    Seen {
        out,
        ttft: m.ttft_ms(),
        itl_mean: m.itl_mean_ms(),
        itl_max: m.itl_max_ms(),
        output_tokens: m.output_tokens(),
        prompt_tokens: m.prompt_tokens(),
        estimated: m.usage_estimated(),
        finish: m.finish_reason().map(str::to_owned),
        done: m.done(),
        error: m.error().cloned(),
    }
}

#[test]
fn openai_stream_is_measured_and_forwarded_unchanged() {
    let seen = run(meter(StreamFormat::OpenAi, false, true), &by_event(OPENAI));
    assert_eq!(seen.out, OPENAI.as_bytes());
    // Chunks arrive at 1010, 1020, ...: the first content ("Hello") is the second event.
    assert_eq!(seen.ttft, Some(20.0));
    // Content at 1020, 1040, 1050 (the comment is chunk 3).
    assert_eq!(seen.itl_mean, Some(15.0));
    assert_eq!(seen.itl_max, Some(20.0));
    assert_eq!(
        (seen.output_tokens, seen.prompt_tokens, seen.estimated),
        (5, Some(12), false)
    );
    assert_eq!(seen.finish.as_deref(), Some("stop"));
    assert!(seen.done);
    assert_eq!(seen.error, None);
    let mut m = meter(StreamFormat::OpenAi, false, true);
    m.feed(OPENAI.as_bytes(), 0.0);
    assert_eq!(m.usage().cached_tokens, Some(4));
    assert_eq!(m.response_id(), Some("chatcmpl-1"));
}

/// A token event of the shape the stream repeats, with `text`.
fn token_event(text: &str) -> String {
    format!("data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n")
}

#[test]
fn token_events_in_one_chunk_are_measured_as_when_they_arrive_one_by_one() {
    // The meter reads the later ones whole (by their bytes, not framed): the same answer.
    let events: Vec<String> = ["A", " b", "", " c\\\"d", " e"].map(token_event).into();
    let stream = [events.concat(), DONE.to_owned()].concat();
    let whole = run_at_once(
        meter(StreamFormat::OpenAi, false, true),
        &[stream.as_bytes()],
    );
    let one_by_one = run_at_once(meter(StreamFormat::OpenAi, false, true), &by_event(&stream));
    assert_eq!(whole, one_by_one);
    assert_eq!(whole.out, stream.as_bytes());
    let mut m = meter(StreamFormat::OpenAi, false, true);
    m.feed(stream.as_bytes(), 0.0);
    assert_eq!(m.text(), "A b c\"d e");
    assert_eq!(m.response_id(), Some("chatcmpl-1"));
}

#[test]
fn token_events_after_the_end_marker_are_dropped_and_not_measured() {
    let events = [
        token_event("A"),
        token_event(" b"),
        DONE.to_owned(),
        token_event(" c"),
    ];
    let stream = events.concat();
    for chunks in [vec![stream.as_bytes()], by_event(&stream)] {
        let mut m = meter(StreamFormat::OpenAi, false, true);
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(m.feed(c, 0.0));
        }
        out.extend_from_slice(m.finish(0.0));
        assert_eq!(out, events[..3].concat().as_bytes());
        assert_eq!(m.text(), "A b");
    }
}

#[test]
fn usage_only_chunk_is_stripped_wherever_the_stream_is_split() {
    let expected = OPENAI.replace(openai_usage_event(), "");
    let b = OPENAI.as_bytes();
    for strip in [false, true] {
        let whole = run_at_once(meter(StreamFormat::OpenAi, strip, true), &[b]);
        let want = if strip { expected.as_bytes() } else { b };
        assert_eq!(whole.out, want);
        // The usage is still read for billing when the client does not see it.
        assert_eq!(whole.prompt_tokens, Some(12));
        for i in 0..=b.len() {
            let split = run_at_once(
                meter(StreamFormat::OpenAi, strip, true),
                &[&b[..i], &b[i..]],
            );
            assert_eq!(split, whole, "strip={strip}, split at {i}");
        }
    }
}

#[test]
fn line_endings_do_not_change_what_is_measured() {
    let lf = run_at_once(
        meter(StreamFormat::OpenAi, true, true),
        &[OPENAI.as_bytes()],
    );
    for eol in ["\r\n", "\r"] {
        let stream = OPENAI.replace('\n', eol);
        let seen = run_at_once(
            meter(StreamFormat::OpenAi, true, true),
            &[stream.as_bytes()],
        );
        let usage = openai_usage_event().replace('\n', eol);
        assert_eq!(seen.out, stream.replace(&usage, "").as_bytes(), "{eol:?}");
        assert_eq!(
            Seen {
                out: lf.out.clone(),
                ..seen
            },
            lf,
            "{eol:?}"
        );
        let bytes = stream.as_bytes();
        for i in 0..=bytes.len() {
            let split = run_at_once(
                meter(StreamFormat::OpenAi, true, true),
                &[&bytes[..i], &bytes[i..]],
            );
            assert_eq!(
                split.out,
                stream.replace(&usage, "").as_bytes(),
                "{eol:?} split at {i}"
            );
        }
    }
}

#[test]
fn multi_line_data_is_joined_before_parsing() {
    let stream =
        "data: {\"choices\":[{\"delta\":\ndata: {\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";
    let seen = run(
        meter(StreamFormat::OpenAi, false, true),
        &[stream.as_bytes()],
    );
    assert_eq!(seen.error, None);
    assert_eq!(seen.out, stream.as_bytes());
    assert_eq!(seen.ttft, Some(10.0));
}

#[test]
fn without_provider_usage_output_tokens_are_counted_and_marked_estimated() {
    let stream = OPENAI.replace(openai_usage_event(), "");
    let seen = run(meter(StreamFormat::OpenAi, false, true), &by_event(&stream));
    let text = "Hello there, friend \"\u{e9}\".";
    assert_eq!(seen.output_tokens, count_tokens(text, "gpt-4o-mini"));
    assert_eq!(seen.prompt_tokens, None);
    assert!(seen.estimated);
    assert!(seen.done);
}

#[test]
fn a_stream_cut_before_its_end_is_truncated_and_gets_no_done() {
    let cut = &OPENAI[..OPENAI.find(": keep-alive").unwrap()];
    let seen = run(meter(StreamFormat::OpenAi, false, true), &[cut.as_bytes()]);
    assert_eq!(seen.error, Some(StreamError::Truncated));
    assert_eq!(seen.out, cut.as_bytes());
    assert!(!seen.done);
    assert_eq!(seen.output_tokens, count_tokens("Hello", "gpt-4o-mini"));

    // Cut in the middle of an event: the partial JSON is an error, not a shorter answer.
    let mid = &OPENAI[..OPENAI.find("friend").unwrap()];
    let seen = run(meter(StreamFormat::OpenAi, false, true), &[mid.as_bytes()]);
    assert_eq!(seen.error, Some(StreamError::InvalidJson));
    assert!(!String::from_utf8_lossy(&seen.out).contains("friend"));

    // A finished answer whose [DONE] never came is complete: no error, and no invented [DONE].
    let no_done = OPENAI.replace("data: [DONE]\n\n", "");
    let seen = run(
        meter(StreamFormat::OpenAi, false, true),
        &[no_done.as_bytes()],
    );
    assert_eq!((seen.error, seen.done), (None, false));
    assert_eq!(seen.out, no_done.as_bytes());
}

#[test]
fn invalid_json_and_error_events_stop_the_stream() {
    let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {nope}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n";
    let seen = run(
        meter(StreamFormat::OpenAi, false, true),
        &[stream.as_bytes()],
    );
    assert_eq!(seen.error, Some(StreamError::InvalidJson));
    assert_eq!(
        seen.out,
        &stream.as_bytes()[..stream.find("data: {nope}").unwrap()]
    );

    let stream = "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n";
    let seen = run(
        meter(StreamFormat::OpenAi, false, true),
        &[stream.as_bytes()],
    );
    assert_eq!(
        seen.error,
        Some(StreamError::Upstream {
            kind: Some("server_error".into()),
            message: "boom".into()
        })
    );
    assert!(seen.out.is_empty());
    let stream = "event: error\ndata: upstream fell over\n\n";
    let seen = run(
        meter(StreamFormat::OpenAi, false, true),
        &[stream.as_bytes()],
    );
    assert_eq!(
        seen.error,
        Some(StreamError::Upstream {
            kind: None,
            message: "upstream fell over".into()
        })
    );
}

/// The `data:` payloads of an OpenAI stream, parsed, with `[DONE]` as a string.
fn chunks_of(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).unwrap();
    text.split_terminator("\n\n")
        .map(|e| {
            let data = e.strip_prefix("data: ").unwrap();
            serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned()))
        })
        .collect()
}

#[test]
fn anthropic_text_stream_becomes_openai_chunks() {
    let seen = run(
        meter(StreamFormat::Anthropic, false, true),
        &by_event(ANTHROPIC_TEXT),
    );
    let expected = concat!(
        "data: {\"id\":\"msg_1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"msg_1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"msg_1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there.\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"msg_1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"msg_1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":13,\"completion_tokens\":3,\"total_tokens\":16,\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n",
        "data: [DONE]\n\n",
    );
    assert_eq!(String::from_utf8(seen.out).unwrap(), expected);
    assert_eq!((seen.ttft, seen.itl_mean), (Some(40.0), Some(10.0)));
    assert_eq!(
        (seen.output_tokens, seen.prompt_tokens, seen.estimated),
        (3, Some(13), false)
    );
    assert_eq!(seen.finish.as_deref(), Some("stop"));
    assert!(seen.done);

    // Without include_usage the usage chunk is left out, nothing else changes.
    let seen = run(
        meter(StreamFormat::Anthropic, false, false),
        &by_event(ANTHROPIC_TEXT),
    );
    let without: String = expected
        .split_inclusive("\n\n")
        .filter(|e| !e.contains("\"usage\""))
        .collect();
    assert_eq!(String::from_utf8(seen.out).unwrap(), without);
    assert_eq!(seen.output_tokens, 3);
}

#[test]
fn anthropic_tool_use_becomes_openai_tool_call_deltas() {
    let seen = run(
        meter(StreamFormat::Anthropic, false, false),
        &by_event(ANTHROPIC_TOOL),
    );
    let chunks = chunks_of(&seen.out);
    let mut content = String::new();
    let mut args = String::new();
    let mut call = None;
    for c in &chunks[..chunks.len() - 1] {
        let delta = &c["choices"][0]["delta"];
        content += delta["content"].as_str().unwrap_or("");
        if let Some(tc) = delta.get("tool_calls") {
            assert_eq!(tc[0]["index"], 0);
            if tc[0].get("id").is_some() {
                call = Some((
                    tc[0]["id"].clone(),
                    tc[0]["type"].clone(),
                    tc[0]["function"]["name"].clone(),
                ));
            }
            args += tc[0]["function"]["arguments"].as_str().unwrap();
        }
    }
    assert_eq!(content, "Checking.");
    assert_eq!(
        call,
        Some(("toolu_1".into(), "function".into(), "get_weather".into()))
    );
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        serde_json::json!({"city": "Paris"})
    );
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "tool_calls"
    );
    assert_eq!(chunks.last(), Some(&Value::String("[DONE]".into())));
    assert_eq!((seen.output_tokens, seen.prompt_tokens), (20, Some(50)));
}

#[test]
fn anthropic_error_event_stops_the_stream_without_done() {
    let seen = run(
        meter(StreamFormat::Anthropic, false, true),
        &by_event(ANTHROPIC_ERROR),
    );
    assert_eq!(
        seen.error,
        Some(StreamError::Upstream {
            kind: Some("overloaded_error".into()),
            message: "Overloaded".into()
        })
    );
    assert!(!seen.done);
    let chunks = chunks_of(&seen.out);
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hi");
    // Provider prompt count from message_start, output counted locally.
    assert_eq!(seen.prompt_tokens, Some(7));
    assert!(seen.estimated);
    assert_eq!(seen.output_tokens, count_tokens("Hi", "gpt-4o-mini"));
}

#[test]
fn anthropic_stream_cut_before_message_stop_gets_no_done() {
    let cut = &ANTHROPIC_TEXT[..ANTHROPIC_TEXT.find("event: message_delta").unwrap()];
    let seen = run(
        meter(StreamFormat::Anthropic, false, true),
        &[cut.as_bytes()],
    );
    assert_eq!(seen.error, Some(StreamError::Truncated));
    assert!(!String::from_utf8(seen.out).unwrap().contains("[DONE]"));
}

#[test]
fn every_two_way_split_of_anthropic_streams_gives_the_same_result() {
    for stream in [ANTHROPIC_TEXT, ANTHROPIC_TOOL, ANTHROPIC_ERROR] {
        let b = stream.as_bytes();
        let whole = run_at_once(meter(StreamFormat::Anthropic, false, true), &[b]);
        for i in 0..=b.len() {
            let split = run_at_once(
                meter(StreamFormat::Anthropic, false, true),
                &[&b[..i], &b[i..]],
            );
            assert_eq!(split, whole, "split at {i}");
        }
    }
}

/// A long OpenAI stream of `n` content events ending with usage and [DONE].
fn long_openai(n: usize, eol: &str) -> String {
    let mut s = String::new();
    for i in 0..n {
        s += &format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" w{i}\"}}}}]}}{eol}{eol}"
        );
        if i % 7 == 0 {
            s += &format!(": ping{eol}{eol}");
        }
    }
    s += &format!("data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":3,\"completion_tokens\":{n}}}}}{eol}{eol}");
    s + &format!("data: [DONE]{eol}{eol}")
}

fn long_anthropic(n: usize) -> String {
    let mut s =
        String::from(&ANTHROPIC_TEXT[..ANTHROPIC_TEXT.find("event: content_block_delta").unwrap()]);
    for i in 0..n {
        s += &format!("event: content_block_delta\r\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\" w{i}\"}}}}\r\n\r\n");
    }
    s + &ANTHROPIC_TEXT[ANTHROPIC_TEXT.find("event: content_block_stop").unwrap()..]
}

proptest! {
    // Each case replays two 300-event streams; 64 cases keep the suite within seconds.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_splits_of_long_streams_give_the_same_result(
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        strip in any::<bool>(),
        crlf in any::<bool>(),
    ) {
        let openai = long_openai(300, if crlf { "\r\n" } else { "\n" });
        let whole = run_at_once(meter(StreamFormat::OpenAi, strip, true), &[openai.as_bytes()]);
        prop_assert_eq!(whole.error.clone(), None);
        let split = run_at_once(meter(StreamFormat::OpenAi, strip, true), &split_at(openai.as_bytes(), &cuts));
        prop_assert_eq!(split, whole);

        let anthropic = long_anthropic(300);
        let whole = run_at_once(meter(StreamFormat::Anthropic, false, strip), &[anthropic.as_bytes()]);
        prop_assert_eq!(whole.error.clone(), None);
        let split = run_at_once(meter(StreamFormat::Anthropic, false, strip), &split_at(anthropic.as_bytes(), &cuts));
        prop_assert_eq!(split, whole);
    }

    /// Stands in for a fuzz target: arbitrary bytes in arbitrary chunks never panic, and the
    /// bytes held back never exceed one event's limit.
    #[test]
    fn arbitrary_bytes_never_panic_and_memory_stays_bounded(
        chunks in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b':'), Just(b'{'), Just(b'd'), Just(b'a')], 0..64),
                Just(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n".to_vec()),
                Just(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n".to_vec()),
                Just(b"data: {\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"partial_json\":\"{\"}}\r\n\r\n".to_vec()),
            ],
            0..40,
        ),
        anthropic in any::<bool>(),
    ) {
        let format = if anthropic { StreamFormat::Anthropic } else { StreamFormat::OpenAi };
        let mut m = meter(format, true, true);
        for c in &chunks {
            let _ = m.feed(c, 1.0);
            prop_assert!(m.pending() <= tollway_core::sse::MAX_EVENT_BYTES);
        }
        let _ = m.finish(2.0);
        let _ = m.output_tokens();
    }
}

#[test]
fn an_endless_event_is_an_error_not_unbounded_memory() {
    let mut m = meter(StreamFormat::OpenAi, false, true);
    let block = vec![b'x'; 64 * 1024];
    assert!(m.feed(b"data: ", 0.0).is_empty());
    for _ in 0..20 {
        assert!(m.feed(&block, 0.0).is_empty());
        assert!(m.pending() <= tollway_core::sse::MAX_EVENT_BYTES);
    }
    assert_eq!(m.error(), Some(&StreamError::EventTooLarge));
    assert_eq!(m.pending(), 0);
}
