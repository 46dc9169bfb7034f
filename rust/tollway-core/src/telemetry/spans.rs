//! A span as a borrowed description ([`SpanOut`]): what a span says is decided once, by the
//! builders in [`super::otlp`] and [`super::mcp_spans`], and encoded two ways.
//! `write_protobuf` writes the protobuf bytes directly, each nested length computed from the
//! borrowed strings; `to_proto` builds the official `opentelemetry-proto` message (OTLP/JSON,
//! tests). Both give the same bytes: the tests in `otlp` compare them.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};
use prost::encoding::{encode_varint, encoded_len_varint, WireType};
use std::borrow::Cow;

/// A string as the concatenation of its parts, so that names and keys made of a record's
/// fields (`POST /v1/chat/completions`, `tollway.metadata.env`) are not allocated.
#[derive(Debug, Clone, Copy)]
pub struct Text<'a>(pub [&'a str; 3]);

impl<'a> Text<'a> {
    /// `a b`.
    pub fn spaced(a: &'a str, b: &'a str) -> Self {
        Self([a, " ", b])
    }

    fn len(&self) -> usize {
        self.0[0].len() + self.0[1].len() + self.0[2].len()
    }

    fn write(&self, out: &mut Vec<u8>) {
        for part in self.0.iter().filter(|p| !p.is_empty()) {
            out.extend_from_slice(part.as_bytes());
        }
    }

    fn into_string(self) -> String {
        self.0.concat()
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Self([s, "", ""])
    }
}

/// An attribute's value: the `AnyValue` variants spans use (`Strs` is an array of strings).
#[derive(Debug, Clone)]
pub enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Double(f64),
    Bool(bool),
    Strs(&'a [String]),
}

#[derive(Debug, Clone)]
pub struct Attr<'a> {
    pub key: Text<'a>,
    pub value: Val<'a>,
}

impl<'a> Attr<'a> {
    pub fn new(key: impl Into<Text<'a>>, value: Val<'a>) -> Self {
        Self {
            key: key.into(),
            value,
        }
    }

    pub fn str(key: impl Into<Text<'a>>, value: &'a str) -> Self {
        Self::new(key, Val::Str(Cow::Borrowed(value)))
    }
}

/// One span. `error` is the message of an error status (none: the status is unset).
#[derive(Debug, Clone)]
pub struct SpanOut<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub name: Text<'a>,
    pub kind: SpanKind,
    pub start: u64,
    pub end: u64,
    pub attrs: Vec<Attr<'a>>,
    pub error: Option<&'a str>,
}

const LEN: WireType = WireType::LengthDelimited;

/// A field key; every tag written here is below 16, so the key is one byte.
fn key(tag: u8, wire: WireType, out: &mut Vec<u8>) {
    debug_assert!((1..16).contains(&tag));
    out.push(tag << 3 | wire as u8);
}

/// A varint; most are lengths below 128, one byte.
#[inline]
fn varint(v: u64, out: &mut Vec<u8>) {
    if v < 0x80 {
        out.push(v as u8);
    } else {
        encode_varint(v, out);
    }
}

/// A varint's length; most are lengths below 128, one byte.
#[inline]
fn varint_len(v: u64) -> usize {
    if v < 0x80 {
        1
    } else {
        encoded_len_varint(v)
    }
}

/// The encoded length of a length-delimited field (tag below 16) of `n` bytes.
pub fn delimited(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

/// The key and length of a length-delimited field (tag below 16).
pub fn write_len(tag: u8, n: usize, out: &mut Vec<u8>) {
    key(tag, LEN, out);
    varint(n as u64, out);
}

/// A length-delimited field whose content starts with another one: both keys and lengths,
/// in one write when the outer length fits a byte (then so does the inner one).
fn write_len2(outer: u8, n: usize, inner: u8, m: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.extend_from_slice(&[
            outer << 3 | LEN as u8,
            n as u8,
            inner << 3 | LEN as u8,
            m as u8,
        ]);
    } else {
        write_len(outer, n, out);
        write_len(inner, m, out);
    }
}

/// A string field, skipped when empty (proto3 `string`).
fn string_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        delimited(n)
    }
}

/// The `ArrayValue` of strings: each an `AnyValue` with `string_value` (field 1).
fn array_len(items: &[String]) -> usize {
    items.iter().map(|s| delimited(delimited(s.len()))).sum()
}

impl Val<'_> {
    /// The length of the `AnyValue` message holding this value. A set oneof field is
    /// written even when it holds its type's default.
    fn len(&self) -> usize {
        match self {
            Val::Str(s) => delimited(s.len()),
            Val::Bool(_) => 2,
            Val::Int(v) => 1 + varint_len(*v as u64),
            Val::Double(_) => 9,
            Val::Strs(items) => delimited(array_len(items)),
        }
    }

    /// The value as the `KeyValue.value` field (2) of length `len` (`self.len()`).
    fn write(&self, len: usize, out: &mut Vec<u8>) {
        const VALUE: u8 = 2 << 3 | LEN as u8;
        match self {
            Val::Str(s) => {
                write_len2(2, len, 1, s.len(), out);
                out.extend_from_slice(s.as_bytes());
            }
            Val::Bool(b) => out.extend_from_slice(&[VALUE, 2, 2 << 3, u8::from(*b)]),
            Val::Int(v) => {
                out.extend_from_slice(&[VALUE, len as u8, 3 << 3]);
                varint(*v as u64, out);
            }
            Val::Double(v) => {
                out.extend_from_slice(&[VALUE, 9, 4 << 3 | WireType::SixtyFourBit as u8]);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Val::Strs(items) => {
                write_len2(2, len, 5, array_len(items), out);
                for s in *items {
                    write_len2(1, delimited(s.len()), 1, s.len(), out);
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
    }

    fn into_proto(self) -> any_value::Value {
        let string = |s: &String| AnyValue {
            value: Some(any_value::Value::StringValue(s.clone())),
        };
        match self {
            Val::Str(s) => any_value::Value::StringValue(s.into_owned()),
            Val::Bool(b) => any_value::Value::BoolValue(b),
            Val::Int(v) => any_value::Value::IntValue(v),
            Val::Double(v) => any_value::Value::DoubleValue(v),
            Val::Strs(items) => any_value::Value::ArrayValue(ArrayValue {
                values: items.iter().map(string).collect(),
            }),
        }
    }
}

impl Attr<'_> {
    /// The `KeyValue` message's length: `key` (1), then `value` (2, always set).
    fn len(&self) -> usize {
        string_len(self.key.len()) + delimited(self.value.len())
    }

    /// The attribute as a `Span.attributes` field (9).
    fn write(&self, out: &mut Vec<u8>) {
        let (k, v) = (self.key.len(), self.value.len());
        if k > 0 {
            write_len2(9, delimited(k) + delimited(v), 1, k, out);
            self.key.write(out);
        } else {
            write_len(9, delimited(v), out);
        }
        self.value.write(v, out);
    }

    /// The official message of the same attribute.
    pub fn to_proto(self) -> KeyValue {
        KeyValue {
            key: self.key.into_string(),
            value: Some(AnyValue {
                value: Some(self.value.into_proto()),
            }),
            ..Default::default()
        }
    }
}

/// The error `Status` message's length: `message` (2), `code` (3, ERROR = 2, one byte).
fn status_len(message: &str) -> usize {
    string_len(message.len()) + 2
}

impl SpanOut<'_> {
    /// The length of the `Span` message `write_protobuf` writes.
    pub fn encoded_len(&self) -> usize {
        let kind = self.kind as i32;
        let fixed = |t: u64| if t == 0 { 0 } else { 9 };
        delimited(self.trace_id.len())
            + delimited(self.span_id.len())
            + self.parent.map_or(0, |p| delimited(p.len()))
            + string_len(self.name.len())
            + if kind == 0 {
                0
            } else {
                1 + varint_len(kind as u64)
            }
            + fixed(self.start)
            + fixed(self.end)
            + self.attrs.iter().map(|a| delimited(a.len())).sum::<usize>()
            + self.error.map_or(0, |m| delimited(status_len(m)))
    }

    /// The `Span` message (without its own key and length), fields in tag order and
    /// defaults skipped, as prost's `encode_raw` writes it. `trace_state` (3), `flags` (16),
    /// the dropped counts, events and links are never set.
    pub fn write_protobuf(&self, out: &mut Vec<u8>) {
        write_len(1, self.trace_id.len(), out);
        out.extend_from_slice(&self.trace_id);
        write_len(2, self.span_id.len(), out);
        out.extend_from_slice(&self.span_id);
        if let Some(parent) = &self.parent {
            write_len(4, parent.len(), out);
            out.extend_from_slice(parent);
        }
        let name = self.name.len();
        if name > 0 {
            write_len(5, name, out);
            self.name.write(out);
        }
        let kind = self.kind as i32;
        if kind != 0 {
            key(6, WireType::Varint, out);
            varint(kind as u64, out);
        }
        for (tag, t) in [(7, self.start), (8, self.end)] {
            if t != 0 {
                key(tag, WireType::SixtyFourBit, out);
                out.extend_from_slice(&t.to_le_bytes());
            }
        }
        for a in &self.attrs {
            a.write(out);
        }
        if let Some(message) = self.error {
            write_len(15, status_len(message), out);
            if !message.is_empty() {
                write_len(2, message.len(), out);
                out.extend_from_slice(message.as_bytes());
            }
            key(3, WireType::Varint, out);
            out.push(StatusCode::Error as u8);
        }
    }

    /// The official message of the same span.
    pub fn to_proto(self) -> Span {
        Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            parent_span_id: self.parent.map_or_else(Vec::new, |p| p.to_vec()),
            name: self.name.into_string(),
            kind: self.kind as i32,
            start_time_unix_nano: self.start,
            end_time_unix_nano: self.end,
            attributes: self.attrs.into_iter().map(Attr::to_proto).collect(),
            status: self.error.map(|message| Status {
                message: message.to_owned(),
                code: StatusCode::Error as i32,
            }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    /// An attribute as owned parts: the key's parts, which value, and the values to pick from.
    type Parts = ([String; 3], u8, String, i64, f64, Vec<String>);

    fn attr(p: &Parts) -> Attr<'_> {
        let (key, which, s, i, d, items) = p;
        let value = match which % 5 {
            0 => Val::Str(Cow::Borrowed(s)),
            1 => Val::Int(*i),
            2 => Val::Double(*d),
            3 => Val::Bool(*i % 2 == 0),
            _ => Val::Strs(items),
        };
        Attr::new(Text([&key[0], &key[1], &key[2]]), value)
    }

    /// Mostly short (often empty, some non-ASCII), sometimes long enough for 2- and 3-byte
    /// length varints.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z.é✓]{0,6}",
            1 => ("[a-zé]", 60usize..12_000).prop_map(|(s, n)| s.repeat(n)),
        ]
    }

    fn time() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), any::<u64>()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Any span is written as the bytes prost encodes for its official message.
        #[test]
        fn any_span_is_written_as_prost_encodes_its_message(
            name in prop::array::uniform3(text()),
            ids in any::<([u8; 16], [u8; 8], Option<[u8; 8]>)>(),
            kind in 0i32..6,
            times in (time(), time()),
            parts in prop::collection::vec(
                (
                    prop::array::uniform3(text()),
                    any::<u8>(),
                    text(),
                    any::<i64>(),
                    any::<f64>(),
                    prop::collection::vec(text(), 0..4),
                ),
                0..12,
            ),
            error in prop::option::of(text()),
        ) {
            let span = SpanOut {
                trace_id: ids.0,
                span_id: ids.1,
                parent: ids.2,
                name: Text([&name[0], &name[1], &name[2]]),
                kind: SpanKind::try_from(kind).unwrap_or(SpanKind::Unspecified),
                start: times.0,
                end: times.1,
                attrs: parts.iter().map(attr).collect(),
                error: error.as_deref(),
            };
            let mut written = Vec::new();
            span.write_protobuf(&mut written);
            prop_assert_eq!(written.len(), span.encoded_len());
            prop_assert_eq!(written, span.to_proto().encode_to_vec());
        }
    }
}
