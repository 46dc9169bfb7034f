//! The meter's formats for the other client APIs: OpenAI chunks translated to Anthropic
//! events, Anthropic events metered and forwarded, Responses API events metered and forwarded.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use serde_json::Value;
use tollway_core::sse::{MeterOptions, SseMeter, StreamFormat};

fn chunk(delta: &str, finish: &str) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
    )
}

fn openai_stream(tool: bool) -> String {
    let mut s = chunk(r#"{"role":"assistant","content":""}"#, "null");
    if tool {
        s += &chunk(
            r#"{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}"#,
            "null",
        );
        s += &chunk(
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}"#,
            "null",
        );
        s += &chunk(
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}"#,
            "null",
        );
        s += &chunk("{}", "\"tool_calls\"");
    } else {
        s += &chunk(r#"{"content":"Hello"}"#, "null");
        s += &chunk(r#"{"content":" there \"é\"."}"#, "null");
        s += &chunk("{}", "\"stop\"");
    }
    s += "data: {\"id\":\"chatcmpl-9\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n";
    s += "data: [DONE]\n\n";
    s
}

fn meter(format: StreamFormat) -> SseMeter {
    SseMeter::new(MeterOptions {
        format,
        model: "claude-via-gateway".to_owned(),
        started_ms: 0.0,
        strip_usage: false,
        include_usage: false,
        created: 1,
    })
}

/// Feeds `text` split at `at` (or whole), returns the output.
fn run(m: &mut SseMeter, text: &str, at: Option<usize>) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    match at {
        Some(i) => {
            out.extend_from_slice(m.feed(&bytes[..i], 1.0));
            out.extend_from_slice(m.feed(&bytes[i..], 2.0));
        }
        None => out.extend_from_slice(m.feed(bytes, 1.0)),
    }
    out.extend_from_slice(m.finish(3.0));
    out
}

/// (event name, data) of each event.
fn events(out: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(out).unwrap();
    text.split("\n\n")
        .filter(|b| !b.is_empty())
        .map(|block| {
            let (name, data) = block.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap().to_owned();
            let data = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            (name, data)
        })
        .collect()
}

#[test]
fn openai_text_becomes_anthropic_events_whatever_the_split() {
    let text = openai_stream(false);
    let mut m = meter(StreamFormat::OpenAiToAnthropic);
    let whole = run(&mut m, &text, None);
    assert!(m.error().is_none() && m.done());
    assert_eq!((m.prompt_tokens(), m.output_tokens()), (Some(12), 5));
    assert_eq!(m.usage().cached_tokens, Some(4));
    let evs = events(&whole);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
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
    for (name, data) in &evs {
        assert_eq!(data["type"], name.as_str());
    }
    assert_eq!(evs[0].1["message"]["id"], "msg_chatcmpl-9");
    assert_eq!(evs[0].1["message"]["model"], "claude-via-gateway");
    assert_eq!(evs[3].1["delta"]["text"], " there \"é\".");
    assert_eq!(evs[5].1["delta"]["stop_reason"], "end_turn");
    let usage = &evs[5].1["usage"];
    assert_eq!(usage["input_tokens"], 8);
    assert_eq!(usage["cache_read_input_tokens"], 4);
    assert_eq!(usage["output_tokens"], 5);
    for i in 0..text.len() {
        let mut m = meter(StreamFormat::OpenAiToAnthropic);
        assert_eq!(run(&mut m, &text, Some(i)), whole, "split at {i}");
    }
}

#[test]
fn openai_tool_calls_become_tool_use_blocks() {
    let mut m = meter(StreamFormat::OpenAiToAnthropic);
    let evs = events(&run(&mut m, &openai_stream(true), None));
    let start = &evs[1].1;
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["id"], "call_1");
    assert_eq!(start["content_block"]["name"], "get_weather");
    let json: String = evs
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(json, r#"{"city":"Paris"}"#);
    let delta = evs.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
}

#[test]
fn a_cut_openai_stream_gets_no_message_stop() {
    let text = openai_stream(false);
    let cut = &text[..text.find("data: [DONE]").unwrap() - 200];
    let mut m = meter(StreamFormat::OpenAiToAnthropic);
    let out = run(&mut m, cut, None);
    assert!(m.error().is_some());
    assert!(!String::from_utf8(out).unwrap().contains("message_stop"));
}

const ANTHROPIC: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":300,\"cache_creation_input_tokens\":200,\"output_tokens\":1}}}\n\n",
    "event: ping\n",
    "data: {\"type\":\"ping\"}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

#[test]
fn anthropic_raw_forwards_every_byte_and_meters_cache_writes() {
    let mut m = meter(StreamFormat::AnthropicRaw);
    let out = run(&mut m, ANTHROPIC, Some(77));
    assert_eq!(out, ANTHROPIC.as_bytes());
    assert!(m.done() && m.error().is_none());
    assert_eq!(m.prompt_tokens(), Some(510));
    assert_eq!(m.usage().cached_tokens, Some(300));
    assert_eq!(m.usage().cache_creation_tokens, Some(200));
    assert_eq!(m.output_tokens(), 3);
    assert_eq!(m.finish_reason(), Some("stop"));
}

const RESPONSES: &str = concat!(
    "event: response.created\n",
    "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[],\"usage\":null}}\n\n",
    "event: response.output_text.delta\n",
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hello\"}\n\n",
    "event: response.output_text.delta\n",
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":2,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\" world\"}\n\n",
    "event: response.completed\n",
    "data: {\"type\":\"response.completed\",\"sequence_number\":3,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"usage\":{\"input_tokens\":20,\"input_tokens_details\":{\"cached_tokens\":8},\"output_tokens\":2,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":22}}}\n\n",
);

#[test]
fn responses_events_are_forwarded_and_metered_from_the_final_event() {
    for at in [None, Some(50), Some(RESPONSES.len() - 5)] {
        let mut m = meter(StreamFormat::Responses);
        let out = run(&mut m, RESPONSES, at);
        assert_eq!(out, RESPONSES.as_bytes());
        assert!(m.done() && m.error().is_none());
        assert_eq!(m.response_id(), Some("resp_1"));
        assert_eq!((m.prompt_tokens(), m.output_tokens()), (Some(20), 2));
        assert_eq!(m.usage().cached_tokens, Some(8));
        assert_eq!(m.finish_reason(), Some("stop"));
        assert!(m.ttft_ms().is_some());
    }
    let cut = &RESPONSES[..RESPONSES.find("event: response.completed").unwrap()];
    let mut m = meter(StreamFormat::Responses);
    run(&mut m, cut, None);
    assert!(
        m.error().is_some(),
        "a stream without its terminal event is truncated"
    );
    let failed = "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"boom\",\"sequence_number\":1}\n\n";
    let mut m = meter(StreamFormat::Responses);
    run(&mut m, failed, None);
    assert!(m.error().unwrap().to_string().contains("boom"));
}
