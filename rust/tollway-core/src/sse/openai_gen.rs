//! Generated OpenAI chunks for the fast reader's property tests: mostly the common shape,
//! with everything else mixed in.

use proptest::prelude::*;
use proptest::sample::Index;

/// A JSON value as text pieces (whitespace is added between them when rendered).
#[derive(Clone, Debug)]
pub(super) enum J {
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

pub(super) fn render(j: &J, ws: &[String], n: &mut usize, out: &mut String) {
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
pub(super) fn string_lit() -> impl Strategy<Value = String> {
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

pub(super) fn chunk() -> impl Strategy<Value = J> {
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
    object(
        head_fields()
            .into_iter()
            .chain([
                field("system_fingerprint", 0.5, text_or_null()),
                field("choices", 0.9, choices),
                field("usage", 0.3, prop_oneof![3 => Just(null()), 1 => usage]),
                field("error", 0.05, prop_oneof![1 => Just(null()), 1 => error]),
            ])
            .collect(),
    )
}

/// The fields a stream repeats at the start of every chunk.
fn head_fields() -> Vec<BoxedStrategy<Option<(String, J)>>> {
    vec![
        field("id", 0.9, text_or_null()),
        field(
            "object",
            0.7,
            Just(J::Raw("\"chat.completion.chunk\"".to_owned())),
        ),
        field("created", 0.7, number_lit().prop_map(J::Raw)),
        field("model", 0.7, string_lit().prop_map(J::Raw)),
    ]
}

/// A change to a chunk's bytes: most chunks are left whole.
#[derive(Clone, Debug)]
pub(super) enum Mutation {
    Truncate(Index),
    Delete(Index),
    Insert(Index, u8),
    Replace(Index, u8),
    Append(&'static str),
}

pub(super) fn mutation() -> impl Strategy<Value = Option<Mutation>> {
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

pub(super) fn chunk_bytes() -> impl Strategy<Value = Vec<u8>> {
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
            mutate(text.into_bytes(), m)
        })
}

pub(super) fn mutate(mut b: Vec<u8>, m: Option<Mutation>) -> Vec<u8> {
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
}

/// `j` with every `content` field's value (a delta's text, among others) replaced by `text`.
pub(super) fn with_content(j: &J, text: &str) -> J {
    match j {
        J::Raw(s) => J::Raw(s.clone()),
        J::Arr(items) => J::Arr(items.iter().map(|i| with_content(i, text)).collect()),
        J::Obj(fields) => J::Obj(
            fields
                .iter()
                .map(|(k, v)| match k.as_str() {
                    "\"content\"" => (k.clone(), J::Raw(text.to_owned())),
                    _ => (k.clone(), with_content(v, text)),
                })
                .collect(),
        ),
    }
}

/// A token chunk, mostly: one choice whose delta has a `content` text (the shape a stream
/// repeats), with the rest of a chunk's variety around it.
pub(super) fn token_chunk() -> impl Strategy<Value = J> {
    let delta = object(vec![
        field("role", 0.1, Just(J::Raw("\"assistant\"".to_owned()))),
        field("content", 0.99, string_lit().prop_map(J::Raw)),
        field(
            "refusal",
            0.2,
            prop_oneof![4 => Just(null()), 1 => text_or_null()],
        ),
        field("reasoning_content", 0.1, text_or_null()),
    ]);
    let choice = object(vec![
        field("index", 0.9, Just(J::Raw("0".to_owned()))),
        field("delta", 0.99, delta),
        field("logprobs", 0.7, Just(null())),
        field(
            "finish_reason",
            0.9,
            prop_oneof![8 => Just(null()), 1 => text_or_null()],
        ),
    ]);
    object(
        head_fields()
            .into_iter()
            .chain([
                field("choices", 0.99, choice.prop_map(|c| J::Arr(vec![c]))),
                field("usage", 0.2, Just(null())),
            ])
            .collect(),
    )
}
