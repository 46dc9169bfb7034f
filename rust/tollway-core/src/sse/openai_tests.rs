use super::*;
use proptest::prelude::*;

#[path = "openai_gen.rs"]
mod generate;
use generate::{
    chunk, chunk_bytes, mutate, mutation, render, string_lit, token_chunk, with_content, J,
};

/// A typical chunk of an OpenAI stream (as the mock upstream sends it).
const SAMPLE: &[u8] = br#"{"id":"chatcmpl-mock43ee6b0bcc4700000001","object":"chat.completion.chunk","created":1795935306,"model":"gpt-4o-mini","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":" is"},"logprobs":null,"finish_reason":null}]}"#;

/// Instructions per chunk parse, counted by callgrind: run the release test binary twice with
/// two counts and take the difference, e.g.
/// `CHUNK_PARSES=1000 valgrind --tool=callgrind $BIN --ignored --exact sse::openai::tests::chunk_parse_cost`
/// (`CHUNK_PARSER=serde` for serde_json alone).
#[test]
#[ignore = "a callgrind measurement, not a test"]
fn chunk_parse_cost() {
    let var = |name| std::env::var(name).ok();
    let n: usize = var("CHUNK_PARSES")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let serde = var("CHUNK_PARSER").as_deref() == Some("serde");
    // One stream's head: after the first chunk, each is read from its `choices` on.
    let mut head = ChunkHead::default();
    for _ in 0..n {
        let data = std::hint::black_box(SAMPLE);
        let chunk = match serde {
            true => crate::json::from_bytes::<Chunk<'_>>(data),
            false => parse_chunk(data, &mut head),
        };
        std::hint::black_box(&chunk);
    }
}

/// What a chunk holds, every field the gateway reads, comparable.
#[derive(Debug, PartialEq)]
struct Seen {
    id: Option<String>,
    choices: Option<Vec<(Option<SeenDelta>, Option<String>)>>,
    usage: Option<[Option<u64>; 4]>,
    error: Option<(Option<String>, Option<String>)>,
}

type SeenCall = (
    Option<u32>,
    Option<String>,
    Option<(Option<String>, Option<String>)>,
);

#[derive(Debug, PartialEq)]
struct SeenDelta {
    texts: [Option<String>; 3],
    tool_calls: Option<Vec<SeenCall>>,
}

fn owned(s: &Option<Cow<'_, str>>) -> Option<String> {
    s.as_deref().map(str::to_owned)
}

fn seen(c: &Chunk<'_>) -> Seen {
    let delta = |d: &Delta<'_>| SeenDelta {
        texts: [
            owned(&d.content),
            owned(&d.refusal),
            owned(&d.reasoning_content),
        ],
        tool_calls: d.tool_calls.as_ref().map(|calls| {
            let call = |t: &ToolCallDelta<'_>| {
                let f = t.function.as_ref();
                let f = f.map(|f| (owned(&f.name), owned(&f.arguments)));
                (t.index, owned(&t.id), f)
            };
            calls.iter().map(call).collect()
        }),
    };
    let choices = c.choices.as_ref().map(|cs| {
        let choice = |ch: &Choice<'_>| (ch.delta.as_ref().map(delta), owned(&ch.finish_reason));
        cs.iter().map(choice).collect()
    });
    let usage = c.usage.as_ref().map(|u| {
        let cached = u
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens);
        let created = u.cache_creation_input_tokens;
        [u.prompt_tokens, u.completion_tokens, cached, created]
    });
    Seen {
        id: owned(&c.id),
        choices,
        usage,
        error: c
            .error
            .as_ref()
            .map(|e| (owned(&e.kind), owned(&e.message))),
    }
}

/// serde_json's reading of `data` alone (the reference).
fn by_serde(data: &[u8]) -> Option<Seen> {
    crate::json::from_bytes::<Chunk<'_>>(data).map(|c| seen(&c))
}

/// The fast reader's answer alone (None: it left the chunk to serde_json).
fn by_scan(data: &[u8]) -> Option<Seen> {
    let text = std::str::from_utf8(data).ok()?;
    scan_chunk(text, &mut ChunkHead::default()).map(|c| seen(&c))
}

/// Asserts the fast path with its fallback reads `data` as serde_json does; answers whether
/// the fast path read it itself.
fn check(data: &[u8]) -> bool {
    let reference = by_serde(data);
    let scanned = by_scan(data);
    let text = String::from_utf8_lossy(data);
    if scanned.is_some() {
        assert_eq!(scanned, reference, "fast path on {text}");
    }
    let parsed = parse_chunk(data, &mut ChunkHead::default());
    assert_eq!(parsed.map(|c| seen(&c)), reference, "{text}");
    scanned.is_some()
}

#[test]
fn the_common_chunks_are_read_by_the_fast_path_borrowing_their_text() {
    let first = br#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1795935306,"model":"gpt-4o-mini","system_fingerprint":null,"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#;
    let last = br#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1795935306,"model":"gpt-4o-mini","system_fingerprint":null,"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#;
    let bench = br#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}"#;
    let reasoning = br#"{"id":"x","choices":[{"delta":{"reasoning_content":"hm","tool_calls":null}}],"error":null}"#;
    for data in [SAMPLE, first, last, bench, reasoning] {
        assert!(check(data), "{}", String::from_utf8_lossy(data));
    }
    let text = std::str::from_utf8(SAMPLE).unwrap();
    let chunk = scan_chunk(text, &mut ChunkHead::default()).unwrap();
    assert!(matches!(
        chunk.id,
        Some(Cow::Borrowed("chatcmpl-mock43ee6b0bcc4700000001"))
    ));
    let choices = chunk.choices.unwrap();
    let delta = choices[0].delta.as_ref().unwrap();
    assert!(matches!(delta.content, Some(Cow::Borrowed(" is"))));
    assert!(delta.refusal.is_none() && choices[0].finish_reason.is_none());
}

#[test]
fn usage_errors_tool_calls_and_other_shapes_are_left_to_serde() {
    let cases: [&[u8]; 9] = [
        br#"{"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#,
        br#"{"error":{"type":"server_error","message":"boom"}}"#,
        br#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
        br#"{"\u0069d":"c","choices":[]}"#,
        br#"{"id":"c","choices":[{"delta":{"content":"a"},"delta":null}]}"#,
        br#"{"id":"a","id":"b"}"#,
        br#"["c",[]]"#,
        br#"{"id":"c","choices":[["x"]]}"#,
        br#"{"id":"c","choices":[{"delta":["a"]}]}"#,
    ];
    for data in cases {
        assert!(!check(data), "{}", String::from_utf8_lossy(data));
    }
    // What serde reads of them: usage, the error, the call, the escaped key, an array as a struct.
    assert!(by_serde(cases[0]).unwrap().usage.is_some());
    assert!(by_serde(cases[1]).unwrap().error.is_some());
    assert!(by_serde(cases[2]).unwrap().choices.unwrap()[0]
        .0
        .as_ref()
        .unwrap()
        .tool_calls
        .is_some());
    assert_eq!(by_serde(cases[3]).unwrap().id.as_deref(), Some("c"));
    assert_eq!(by_serde(cases[4]), None); // duplicate field
    assert_eq!(by_serde(cases[6]).unwrap().id.as_deref(), Some("c"));
}

#[test]
fn escapes_are_decoded_as_serde_decodes_them() {
    let cases: [&[u8]; 6] = [
        br#"{"id":"a\"b\\c\/d\b\f\n\r\t","choices":[{"delta":{"content":"\u00e9\u00E9 \ud83d\ude00!"}}]}"#,
        "{\"id\":\"h\u{e9}llo \u{2713} \u{1f600}\",\"choices\":[{\"delta\":{\"content\":\"\u{e9}\\n\u{e9}\"}}]}".as_bytes(),
        br#"{"id":"\u0000","choices":null}"#,
        br#"{"id":"x","model":"\ud800","choices":[{"delta":{"content":"\u0041\u0042"}}]}"#,
        br#"{"id":"\"\"","choices":[{"delta":{"content":"\\"}}]}"#,
        br#"{"id":"abcdefghijklmnop\n","choices":[{"delta":{"content":"abcdefgh\"abcdefgh"}}]}"#,
    ];
    // (A lone surrogate in a skipped value is fine for serde, which checks only its hex digits.)
    for data in cases {
        assert!(check(data), "{}", String::from_utf8_lossy(data));
    }
}

#[test]
fn json_serde_refuses_is_refused() {
    let cases: [&[u8]; 24] = [
        br#"{"id":"c","created":12x,"choices":[]}"#,
        br#"{"id":"c","created":012,"choices":[]}"#,
        br#"{"id":"c","created":1.,"choices":[]}"#,
        br#"{"id":"c","created":-,"choices":[]}"#,
        br#"{"id":"c","created":1e,"choices":[]}"#,
        br#"{"id":"c","created":+1,"choices":[]}"#,
        br#"{"id":"c","choices":[{"logprobs":nul}]}"#,
        br#"{"id":"c","choices":[{"logprobs":nulll}]}"#,
        br#"{"id":"c","x":True}"#,
        br#"{"id":"c","choices":[]}x"#,
        br#"{"id":"c","choices":[]}}"#,
        br#"{"id":"c","choices":[],}"#,
        br#"{"id":"c","choices":[{"delta":{"content":"a"}},]}"#,
        br#"{"id":"c"#,
        br#"{"id":"c","choices":[{"delta":{"content":"a"#,
        b"{\"id\":\"a\x01b\",\"choices\":[]}",
        b"{\"id\":\"c\",\"model\":\"a\tb\"}",
        br#"{"id":"\ud800","choices":[]}"#,
        br#"{"id":"\udc00","choices":[]}"#,
        br#"{"id":"\ud800\u0041","choices":[]}"#,
        br#"{"id":"\x","choices":[]}"#,
        br#"{"id":"\u12","choices":[]}"#,
        b"{\"id\":\"\xff\",\"choices\":[]}",
        br#"{"id":1,"choices":[]}"#,
    ];
    for data in cases {
        assert!(!check(data), "{}", String::from_utf8_lossy(data));
        assert_eq!(by_serde(data), None, "{}", String::from_utf8_lossy(data));
    }
}

#[test]
fn utf8_is_checked_in_every_string_read_or_skipped() {
    let ok: [&[u8]; 4] = [
        "{\"id\":\"h\u{e9}\",\"model\":\"\u{1f600}\u{4e2d}\",\"choices\":[]}".as_bytes(),
        "{\"\u{e9}t\u{e9}\":[\"\u{2713}\",{\"\u{4e2d}\":1}],\"id\":\"c\"}".as_bytes(),
        "{\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"abcdefgh\u{e9}\\n\u{e9}\"}}]}"
            .as_bytes(),
        "{\"id\":\"c\",\"model\":\"\u{e9}\\n\u{e9}abcdefghijk\u{e9}\"}".as_bytes(),
    ];
    for data in ok {
        assert!(check(data), "{}", String::from_utf8_lossy(data));
    }
    let bad: [&[u8]; 10] = [
        b"{\"id\":\"\xff\",\"choices\":[]}",
        b"{\"id\":\"c\",\"model\":\"gpt\xc3\"}",
        b"{\"id\":\"c\",\"model\":\"abcdefghij\xe2\x9c\"}",
        b"{\"id\":\"c\",\"model\":\"\xc0\xaf\"}",
        b"{\"id\":\"c\",\"model\":\"\xed\xa0\x80\"}",
        b"{\"id\":\"c\",\"mod\xffel\":1}",
        b"{\"id\":\"c\",\"x\":[{\"a\":\"\xff\"}]}",
        b"{\"id\":\"c\",\"x\":\"a\\n\xff\"}",
        b"{\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"a\\n\xff\"}}]}",
        b"{\"id\":\"c\"}\xc3\xa9",
    ];
    for data in bad {
        assert!(!check(data), "{}", String::from_utf8_lossy(data));
        assert_eq!(by_serde(data), None);
    }
}

#[test]
fn whitespace_anywhere_json_allows_it() {
    let data = b" \r\n\t{ \"id\" : \"c\" ,\n\"n\":\t[ 1 , { \"a\" : [ ] } , -0.5e+3 ] , \"choices\" :\r[ { \"delta\" : { \"content\" : \"x\" } , \"finish_reason\" : null } ] }\n ";
    assert!(check(data));
    assert!(!check(b"{\"id\":\"c\"\x0c}")); // form feed is not JSON whitespace
}

#[test]
fn deep_nesting_is_left_to_serde() {
    for depth in [20, 40, 200] {
        let data = format!(
            r#"{{"id":"c","x":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert_eq!(check(data.as_bytes()), depth < 32, "{depth}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_fast_path_reads_what_serde_reads(data in chunk_bytes()) {
        let reference = by_serde(&data);
        let scanned = by_scan(&data);
        let text = String::from_utf8_lossy(&data);
        if scanned.is_some() {
            prop_assert_eq!(&scanned, &reference, "fast path on {}", text);
        }
        let parsed = parse_chunk(&data, &mut ChunkHead::default());
        prop_assert_eq!(parsed.map(|c| seen(&c)), reference, "{}", text);
    }

    /// A chunk read after another (the head that one left kept) reads as serde reads it alone,
    /// whether it repeats the first one's head or differs from it anywhere.
    #[test]
    fn a_chunk_after_another_reads_what_serde_reads(
        (first, second) in chunk_pair(),
    ) {
        let mut head = ChunkHead::default();
        let reading = parse_chunk(&first, &mut head).map(|c| seen(&c));
        prop_assert_eq!(reading, by_serde(&first));
        let text = String::from_utf8_lossy(&second);
        let parsed = parse_chunk(&second, &mut head);
        prop_assert_eq!(parsed.map(|c| seen(&c)), by_serde(&second), "after a chunk: {}", text);
    }
}

/// A chunk (half of them token chunks), and a second one as a stream might send after it: the same chunk mutated (in its
/// head or after it), the same chunk with another text for its `content`, the same head with
/// other choices, or the same head followed by another chunk's fields (which may repeat one of
/// the head's; `usage` and `error` can be in a head, as a generated chunk's fields come in any
/// order).
fn chunk_pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let ws = prop_oneof![8 => Just(String::new()), 1 => "[ \t\r\n]{1,3}"];
    let how = 0..4u8;
    let first = prop_oneof![chunk(), token_chunk()];
    let parts = (first, chunk(), prop::collection::vec(ws, 0..6));
    (parts, mutation(), how, string_lit()).prop_map(|((j, other, ws), m, how, text)| {
        let mut first = String::new();
        render(&j, &ws, &mut 0, &mut first);
        let render = |j: &J| {
            let mut text = String::new();
            render(j, &ws, &mut 0, &mut text);
            text.into_bytes()
        };
        let second = match (how, &j, &other) {
            (1 | 2, J::Obj(fields), J::Obj(theirs)) => {
                let is_choices = |(k, _): &&(String, J)| k == "choices";
                let head = fields.iter().take_while(|f| !is_choices(f));
                let choices = theirs.iter().find(is_choices);
                let choices = choices.or_else(|| fields.iter().find(is_choices));
                let rest: Vec<_> = match how {
                    1 => fields
                        .iter()
                        .skip_while(|f| !is_choices(f))
                        .skip(1)
                        .collect(),
                    _ => theirs.iter().filter(|f| !is_choices(f)).collect(),
                };
                render(&J::Obj(head.chain(choices).chain(rest).cloned().collect()))
            }
            (3, ..) => render(&with_content(&j, &text)),
            _ => mutate(first.clone().into_bytes(), m),
        };
        (first.into_bytes(), second)
    })
}

/// Every second chunk of a generated pair reuses the first one's head, often.
#[test]
fn generated_pairs_reuse_the_head() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = chunk_pair();
    let (mut fast, mut reused, mut tokens) = (0, 0, 0);
    for _ in 0..2000 {
        let (first, second) = strategy.new_tree(&mut runner).unwrap().current();
        let mut head = ChunkHead::default();
        let Ok(text) = std::str::from_utf8(&first) else {
            continue;
        };
        if scan_chunk(text, &mut head).is_none() {
            continue;
        }
        fast += 1;
        reused += usize::from(second.starts_with(&head.bytes));
        tokens += usize::from(head.token_chunk(&second).is_some());
    }
    assert!(
        fast > 300 && reused > 300 && tokens > 100,
        "{fast} {reused} {tokens}"
    );
}

#[test]
fn a_streams_chunks_are_read_from_their_choices_on() {
    let head = br#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1795935306,"model":"gpt-4o-mini","system_fingerprint":null,"choices":"#;
    let chunk = |tail: &str| [&head[..], tail.as_bytes()].concat();
    let mut kept = ChunkHead::default();
    let first = chunk(r#"[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#);
    let c = parse_chunk(&first, &mut kept).unwrap();
    assert_eq!(c.id.as_deref(), Some("chatcmpl-1"));
    assert_eq!(kept.bytes, head);
    // The same head: read from `choices` on, the id a slice of this chunk's own text.
    let second = chunk(r#"[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}]}"#);
    let c = parse_chunk(&second, &mut kept).unwrap();
    assert!(matches!(c.id, Some(Cow::Borrowed("chatcmpl-1"))));
    let choice = &c.choices.as_ref().unwrap()[0];
    assert_eq!(choice.delta.as_ref().unwrap().content.as_deref(), Some("b"));
    assert_eq!(choice.finish_reason.as_deref(), Some("stop"));
    // A token chunk of the same shape as the one before: read without a scan, its text a
    // slice of its own bytes. (The one before ended the answer: it is not a token chunk.)
    assert!(kept.token_chunk(&first).is_none());
    parse_chunk(&first, &mut kept).unwrap();
    let third = chunk(r#"[{"index":0,"delta":{"content":"c d"},"finish_reason":null}]}"#);
    let c = kept.token_chunk(&third).unwrap();
    assert!(matches!(c.id, Some(Cow::Borrowed("chatcmpl-1"))));
    let choice = &c.choices.as_ref().unwrap()[0];
    assert!(matches!(
        choice.delta.as_ref().unwrap().content,
        Some(Cow::Borrowed("c d"))
    ));
    assert_eq!(
        parse_chunk(&third, &mut kept).map(|c| seen(&c)),
        by_serde(&third)
    );
    // Not for a text with an escape, or another shape: those are scanned.
    for tail in [
        r#"[{"index":0,"delta":{"content":"c\nd"},"finish_reason":null}]}"#,
        r#"[{"index":0,"delta":{"content":"c","refusal":null},"finish_reason":null}]}"#,
        r#"[{"index":0,"delta":{"content":"c"},"finish_reason":"stop"}]}"#,
    ] {
        let data = chunk(tail);
        assert!(kept.token_chunk(&data).is_none(), "{tail}");
        assert_eq!(
            parse_chunk(&data, &mut kept).map(|c| seen(&c)),
            by_serde(&data)
        );
    }
    // A field the head already had, again after the choices: refused as serde refuses it.
    let twice = chunk(r#"[],"id":"other"}"#);
    assert!(parse_chunk(&twice, &mut kept).is_none());
    assert!(by_serde(&twice).is_none());
    // Usage after the choices is serde's to read; the head is kept.
    let usage = chunk(r#"[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#);
    assert_eq!(
        parse_chunk(&usage, &mut kept).map(|c| seen(&c)),
        by_serde(&usage)
    );
    assert_eq!(kept.bytes, head);
    // Another head (another id) is read whole, and kept in its place.
    let other = br#"{"id":"chatcmpl-2","choices":[]}"#;
    assert_eq!(
        parse_chunk(other, &mut kept).unwrap().id.as_deref(),
        Some("chatcmpl-2")
    );
    assert_eq!(kept.bytes, br#"{"id":"chatcmpl-2","choices":"#);
    // An escaped id is not a slice of the text: that head is not kept.
    let escaped = br#"{"id":"chat\u0063mpl-3","choices":[]}"#;
    assert_eq!(
        parse_chunk(escaped, &mut kept).unwrap().id.as_deref(),
        Some("chatcmpl-3")
    );
    assert!(
        kept.bytes.is_empty(),
        "{}",
        String::from_utf8_lossy(&kept.bytes)
    );
    // A head holding `usage` and `error`: either again after the choices is a field seen twice.
    let head = br#"{"usage":null,"id":null,"error":null,"choices":"#;
    let chunk = |tail: &str| [&head[..], tail.as_bytes()].concat();
    assert!(parse_chunk(&chunk("[]}"), &mut kept).is_some());
    assert_eq!(kept.bytes, head);
    for tail in [
        r#"[],"usage":null}"#,
        r#"[],"error":null}"#,
        r#"[],"id":null}"#,
    ] {
        let data = chunk(tail);
        assert!(by_serde(&data).is_none(), "{tail}");
        assert!(parse_chunk(&data, &mut kept).is_none(), "{tail}");
    }
    let data = chunk(r#"[{"delta":{"content":"x"}}]}"#);
    let c = parse_chunk(&data, &mut kept).unwrap();
    assert!(c.id.is_none() && c.choices.is_some());
}

/// The generator reaches the fast path, the fallback and the failures, each often.
#[test]
fn generated_chunks_cover_every_path() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut fast, mut fallback, mut refused) = (0, 0, 0);
    let strategy = chunk_bytes();
    for _ in 0..2000 {
        let data = strategy.new_tree(&mut runner).unwrap().current();
        match (by_scan(&data).is_some(), by_serde(&data).is_some()) {
            (true, _) => fast += 1,
            (false, true) => fallback += 1,
            (false, false) => refused += 1,
        }
    }
    eprintln!("{fast} {fallback} {refused}");
    assert!(
        fast > 300 && fallback > 300 && refused > 300,
        "{fast} {fallback} {refused}"
    );
}
