use super::*;
use proptest::prelude::*;
use proptest::sample::Index;

/// A typical chunk of an OpenAI stream (as the mock upstream sends it).
const SAMPLE: &[u8] = br#"{"id":"chatcmpl-mock43ee6b0bcc4700000001","object":"chat.completion.chunk","created":1795935306,"model":"gpt-4o-mini","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":" is"},"logprobs":null,"finish_reason":null}]}"#;

/// The load test's chunk (benchmarks/test_bench_request_path.py): shorter than the mock's.
const BENCH_SAMPLE: &[u8] = br#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}"#;

/// Instructions per chunk parse, counted by callgrind: run the release test binary twice with
/// two counts and take the difference, e.g.
/// `CHUNK_PARSES=1000 valgrind --tool=callgrind $BIN --ignored --exact sse::openai::tests::chunk_parse_cost`
/// (`CHUNK_SAMPLE=bench` for the load test's chunk, `CHUNK_PARSER=serde` for serde_json alone).
#[test]
#[ignore = "a callgrind measurement, not a test"]
fn chunk_parse_cost() {
    let var = |name| std::env::var(name).ok();
    let n: usize = var("CHUNK_PARSES")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let sample = match var("CHUNK_SAMPLE").as_deref() {
        Some("bench") => BENCH_SAMPLE,
        _ => SAMPLE,
    };
    let parse = match var("CHUNK_PARSER").as_deref() {
        Some("serde") => crate::json::from_bytes::<Chunk<'_>>,
        _ => parse_chunk,
    };
    for _ in 0..n {
        let chunk = parse(std::hint::black_box(sample));
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
    scan_chunk(text).map(|c| seen(&c))
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
    assert_eq!(parse_chunk(data).map(|c| seen(&c)), reference, "{text}");
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
    let chunk = scan_chunk(text).unwrap();
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

// Generated chunks: mostly the common shape, with everything else mixed in.

/// A JSON value as text pieces (whitespace is added between them when rendered).
#[derive(Clone, Debug)]
enum J {
    Raw(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

/// Whitespace from `ws` in turn (none when it is empty).
fn space(ws: &[String], n: &mut usize, out: &mut String) {
    if !ws.is_empty() {
        out.push_str(&ws[*n % ws.len()]);
        *n += 1;
    }
}

fn render(j: &J, ws: &[String], n: &mut usize, out: &mut String) {
    match j {
        J::Raw(s) => out.push_str(s),
        J::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                space(ws, n, out);
                if i > 0 {
                    out.push(',');
                    space(ws, n, out);
                }
                render(item, ws, n, out);
            }
            space(ws, n, out);
            out.push(']');
        }
        J::Obj(fields) => {
            out.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                space(ws, n, out);
                if i > 0 {
                    out.push(',');
                    space(ws, n, out);
                }
                out.push_str(k);
                space(ws, n, out);
                out.push(':');
                space(ws, n, out);
                render(v, ws, n, out);
            }
            space(ws, n, out);
            out.push('}');
        }
    }
}

/// A string literal: plain text, unicode, every kind of escape, rarely an invalid piece.
fn string_lit() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        160 => "[a-z ]{1,12}",
        40 => "[é✓😀中\u{7f}\u{80}\u{ffff}]{1,3}",
        40 => prop::sample::select(vec![r#"\""#, r"\\", r"\/", r"\b", r"\f", r"\n", r"\r", r"\t"])
            .prop_map(str::to_owned),
        40 => (any::<char>(), any::<bool>()).prop_map(|(c, upper)| {
            let mut units = [0u16; 2];
            let escaped: String = c.encode_utf16(&mut units).iter().map(|u| format!("\\u{u:04x}")).collect();
            if upper { escaped.to_uppercase().replace("\\U", "\\u") } else { escaped }
        }),
        3 => prop::sample::select(vec![r"\ud800", r"\udfff", r"\ud800\u0041", r"\ud800x", "\u{1}", "\t", r"\x", r"\u12", r"\u12g4", r"\"])
            .prop_map(str::to_owned),
    ];
    prop::collection::vec(piece, 0..5).prop_map(|p| format!("\"{}\"", p.concat()))
}

fn number_lit() -> impl Strategy<Value = String> {
    prop_oneof![
        100 => r"-?(0|[1-9][0-9]{0,12})(\.[0-9]{1,4})?([eE][+-]?[0-9]{1,3})?",
        1 => prop::sample::select(vec!["01", "1.", "-", "12x", "+1", ".5", "1e", "-01", "1.e3", "0x1"])
            .prop_map(str::to_owned),
    ]
}

fn scalar() -> impl Strategy<Value = J> {
    prop_oneof![
        30 => string_lit(),
        30 => number_lit(),
        30 => prop::sample::select(vec!["null", "true", "false"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["nul", "nulll", "True", "NaN", "fals", "tru"]).prop_map(str::to_owned),
    ]
    .prop_map(J::Raw)
}

fn any_value() -> impl Strategy<Value = J> {
    scalar().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
            prop::collection::vec((key(), inner), 0..4).prop_map(J::Obj),
        ]
    })
}

/// An unknown key, mostly plain.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![20 => "\"[a-z_]{0,10}\"", 1 => string_lit()]
}

fn null() -> J {
    J::Raw("null".to_owned())
}

/// A known field's name, sometimes escaped (the same name to serde).
fn name(n: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        50 => Just(format!("\"{n}\"")),
        1 => Just(format!("\"\\u{:04x}{}\"", u32::from(n.as_bytes()[0]), &n[1..])),
    ]
}

/// An object from optional fields, shuffled, sometimes with extra and repeated ones.
fn object(fields: Vec<BoxedStrategy<Option<(String, J)>>>) -> impl Strategy<Value = J> {
    let extra = prop::collection::vec((key(), any_value()), 0..3);
    (fields, extra, prop::option::weighted(0.05, any::<Index>()))
        .prop_flat_map(|(fields, extra, repeat)| {
            let mut all: Vec<(String, J)> = fields.into_iter().flatten().chain(extra).collect();
            if let (Some(i), false) = (repeat, all.is_empty()) {
                all.push(all[i.index(all.len())].clone());
            }
            Just(all).prop_shuffle()
        })
        .prop_map(J::Obj)
}

fn field(
    n: &'static str,
    present: f64,
    value: impl Strategy<Value = J> + 'static,
) -> BoxedStrategy<Option<(String, J)>> {
    prop::option::weighted(present, (name(n), value)).boxed()
}

fn text_or_null() -> impl Strategy<Value = J> {
    prop_oneof![16 => string_lit().prop_map(J::Raw), 6 => Just(null()), 1 => any_value()]
}

fn delta() -> impl Strategy<Value = J> {
    let function = object(vec![
        field("name", 0.7, text_or_null()),
        field("arguments", 0.7, text_or_null()),
    ]);
    let call = object(vec![
        field("index", 0.8, number_lit().prop_map(J::Raw)),
        field("id", 0.5, text_or_null()),
        field("type", 0.5, Just(J::Raw("\"function\"".to_owned()))),
        field("function", 0.8, function),
    ]);
    let calls = prop_oneof![
        3 => Just(null()),
        2 => prop::collection::vec(call, 0..3).prop_map(J::Arr),
        1 => any_value(),
    ];
    object(vec![
        field("role", 0.3, Just(J::Raw("\"assistant\"".to_owned()))),
        field("content", 0.8, text_or_null()),
        field("refusal", 0.3, text_or_null()),
        field("reasoning_content", 0.2, text_or_null()),
        field("tool_calls", 0.2, calls),
    ])
}

fn choice() -> impl Strategy<Value = J> {
    object(vec![
        field("index", 0.9, number_lit().prop_map(J::Raw)),
        field(
            "delta",
            0.9,
            prop_oneof![16 => delta(), 1 => Just(null()), 1 => any_value()],
        ),
        field(
            "logprobs",
            0.7,
            prop_oneof![3 => Just(null()), 1 => any_value()],
        ),
        field("finish_reason", 0.8, text_or_null()),
    ])
}

fn chunk() -> impl Strategy<Value = J> {
    let count = || prop_oneof![4 => "[0-9]{1,4}".prop_map(J::Raw), 1 => any_value()];
    let usage = object(vec![
        field("prompt_tokens", 0.9, count()),
        field("completion_tokens", 0.9, count()),
        field("total_tokens", 0.5, count()),
        field(
            "prompt_tokens_details",
            0.3,
            object(vec![field("cached_tokens", 0.8, count())]),
        ),
        field("cache_creation_input_tokens", 0.2, count()),
    ]);
    let error = object(vec![
        field("type", 0.8, text_or_null()),
        field("message", 0.8, text_or_null()),
    ]);
    let choices = prop_oneof![
        16 => prop::collection::vec(choice(), 0..3).prop_map(J::Arr),
        1 => Just(null()),
        1 => any_value(),
    ];
    object(vec![
        field("id", 0.9, text_or_null()),
        field(
            "object",
            0.7,
            Just(J::Raw("\"chat.completion.chunk\"".to_owned())),
        ),
        field("created", 0.7, number_lit().prop_map(J::Raw)),
        field("model", 0.7, string_lit().prop_map(J::Raw)),
        field("system_fingerprint", 0.5, text_or_null()),
        field("choices", 0.9, choices),
        field("usage", 0.3, prop_oneof![3 => Just(null()), 1 => usage]),
        field("error", 0.05, prop_oneof![1 => Just(null()), 1 => error]),
    ])
}

/// A change to a chunk's bytes: most chunks are left whole.
#[derive(Clone, Debug)]
enum Mutation {
    Truncate(Index),
    Delete(Index),
    Insert(Index, u8),
    Replace(Index, u8),
    Append(&'static str),
}

fn mutation() -> impl Strategy<Value = Option<Mutation>> {
    let byte = prop::sample::select(b"\"\\,:{}[]x0 -\x01\xff\xc3\x80\xe2nle".to_vec());
    prop::option::weighted(
        0.25,
        prop_oneof![
            any::<Index>().prop_map(Mutation::Truncate),
            any::<Index>().prop_map(Mutation::Delete),
            (any::<Index>(), byte.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            (any::<Index>(), byte).prop_map(|(i, b)| Mutation::Replace(i, b)),
            prop::sample::select(vec!["x", " ", "}", ",", "{}", "\n\t", "\u{0}"])
                .prop_map(Mutation::Append),
        ],
    )
}

fn chunk_bytes() -> impl Strategy<Value = Vec<u8>> {
    let ws = prop_oneof![8 => Just(String::new()), 1 => "[ \t\r\n]{1,3}"];
    (
        chunk(),
        prop::collection::vec(ws, 0..6),
        "[ \t\r\n]{0,2}",
        mutation(),
    )
        .prop_map(|(j, ws, edge, m)| {
            let mut text = edge.clone();
            render(&j, &ws, &mut 0, &mut text);
            text.push_str(&edge);
            let mut b = text.into_bytes();
            match m {
                None => {}
                Some(Mutation::Truncate(i)) => b.truncate(i.index(b.len() + 1)),
                Some(Mutation::Delete(i)) => {
                    b.remove(i.index(b.len()));
                }
                Some(Mutation::Insert(i, c)) => b.insert(i.index(b.len() + 1), c),
                Some(Mutation::Replace(i, c)) => {
                    let i = i.index(b.len());
                    b[i] = c;
                }
                Some(Mutation::Append(s)) => b.extend_from_slice(s.as_bytes()),
            }
            b
        })
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
        prop_assert_eq!(parse_chunk(&data).map(|c| seen(&c)), reference, "{}", text);
    }
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
