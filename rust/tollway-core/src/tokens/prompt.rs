//! The prompt of a chat request, read for counting: one pass over the JSON that borrows its
//! strings and skips everything else, instead of building a value tree (a map per object, a
//! string per key). Every field is read leniently: a value of an unexpected type counts as
//! absent, as it did when the count walked a `serde_json::Value`.

use std::borrow::Cow;
use std::fmt;

use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Encoding;

// OpenAI's published accounting for chat prompts: each message costs a few framing tokens,
// a `name` one more, and the reply is primed with three.
pub(super) const PER_MESSAGE: u64 = 3;
pub(super) const PER_NAME: u64 = 1;
pub(super) const REPLY_PRIMING: u64 = 3;
// An image part is billed by size and detail, which the gateway does not decode; this is
// OpenAI's price of a low-detail image, a floor rather than a guess at the real count.
pub(super) const PER_IMAGE: u64 = 85;

/// See [`super::count_prompt_tokens`].
pub(super) fn count(body: &[u8], enc: Encoding) -> u64 {
    let Some(Prompt { messages, tools }) = crate::json::from_bytes::<Prompt<'_>>(body) else {
        return 0;
    };
    let mut total = 0;
    if let Some(messages) = messages {
        for m in &messages {
            total += PER_MESSAGE + m.tokens(enc);
        }
        total += REPLY_PRIMING;
    }
    if let Some(tools) = tools {
        // Providers render tool schemas into the prompt in their own format; the compact JSON
        // text is a close stand-in for its size.
        if let Ok(serde_json::Value::Array(list)) = serde_json::from_str(tools.get()) {
            if !list.is_empty() {
                total += enc.count(&serde_json::Value::Array(list).to_string());
            }
        }
    }
    total
}

/// The request: its `messages` (None unless an array) and its `tools` as sent.
struct Prompt<'a> {
    messages: Option<Vec<Message<'a>>>,
    tools: Option<&'a RawValue>,
}

/// How one of the types below reads a JSON value: each reads the shapes it cares about and
/// reads past (without building) every other value, which counts as `absent()`.
trait Read<'de>: Sized {
    fn absent() -> Self;
    fn text(_: Cow<'de, str>) -> Self {
        Self::absent()
    }
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::absent())
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::absent())
    }
}

struct ReadVisitor<T>(PhantomData<T>);

impl<'de, T: Read<'de>> Visitor<'de> for ReadVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
        Ok(T::absent())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<T, E> {
        Ok(T::absent())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<T, E> {
        Ok(T::absent())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        Ok(T::absent())
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::absent())
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<T, E> {
        Ok(T::text(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        Ok(T::text(Cow::Owned(s.to_owned())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::map(map)
    }
}

macro_rules! deserialize_by_read {
    ($($ty:ident),*) => {$(
        impl<'de> Deserialize<'de> for $ty<'de> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(ReadVisitor(PhantomData))
            }
        }
    )*};
}

deserialize_by_read!(Prompt, Messages, Message, Content, Part, Calls, Call, Function, Text);

impl<'de> Read<'de> for Prompt<'de> {
    fn absent() -> Self {
        Prompt {
            messages: None,
            tools: None,
        }
    }
    fn seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        Ok(Prompt {
            messages: Some(messages(seq)?),
            tools: None,
        })
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut out = Self::absent();
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            match key.as_deref().unwrap_or_default() {
                "messages" => out.messages = map.next_value::<Messages<'de>>()?.0,
                "tools" => out.tools = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

fn messages<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<Message<'de>>, A::Error> {
    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4));
    while let Some(m) = seq.next_element::<Message<'de>>()? {
        out.push(m);
    }
    Ok(out)
}

/// A value that counts only as an array of messages (None otherwise).
struct Messages<'a>(Option<Vec<Message<'a>>>);

impl<'de> Read<'de> for Messages<'de> {
    fn absent() -> Self {
        Messages(None)
    }
    fn seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        Ok(Messages(Some(messages(seq)?)))
    }
}

/// One message: what it contributes to the count (a value that is not an object: nothing).
#[derive(Default)]
struct Message<'a> {
    role: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    content: Content<'a>,
    calls: Vec<FunctionCall<'a>>,
}

impl Message<'_> {
    fn tokens(&self, enc: Encoding) -> u64 {
        let mut n = self.role.as_deref().map_or(0, |r| enc.count(r));
        if let Some(name) = &self.name {
            n += PER_NAME + enc.count(name);
        }
        n += match &self.content {
            Content::None => 0,
            Content::Text(s) => enc.count(s),
            Content::Parts(parts) => parts
                .iter()
                .map(|p| match p {
                    Part::Image => PER_IMAGE,
                    Part::Text(Some(s)) => enc.count(s),
                    Part::Text(None) => 0,
                })
                .sum(),
        };
        for (name, arguments) in &self.calls {
            n += name.as_deref().map_or(0, |s| enc.count(s));
            n += arguments.as_deref().map_or(0, |s| enc.count(s));
        }
        n
    }
}

impl<'de> Read<'de> for Message<'de> {
    fn absent() -> Self {
        Message::default()
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut m = Message::default();
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            match key.as_deref().unwrap_or_default() {
                "role" => m.role = map.next_value::<Text<'de>>()?.0,
                "name" => m.name = map.next_value::<Text<'de>>()?.0,
                "content" => m.content = map.next_value()?,
                "tool_calls" => m.calls = map.next_value::<Calls<'de>>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(m)
    }
}

/// A message's `content`: its text, its parts, or anything else (nothing to count).
#[derive(Default)]
enum Content<'a> {
    #[default]
    None,
    Text(Cow<'a, str>),
    Parts(Vec<Part<'a>>),
}

impl<'de> Read<'de> for Content<'de> {
    fn absent() -> Self {
        Content::None
    }
    fn text(s: Cow<'de, str>) -> Self {
        Content::Text(s)
    }
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut parts = Vec::new();
        while let Some(p) = seq.next_element::<Part<'de>>()? {
            parts.push(p);
        }
        Ok(Content::Parts(parts))
    }
}

/// A content part: an image (a fixed price), or its `text` (none: a part that is not an object).
enum Part<'a> {
    Image,
    Text(Option<Cow<'a, str>>),
}

impl<'de> Read<'de> for Part<'de> {
    fn absent() -> Self {
        Part::Text(None)
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let (mut kind, mut text) = (None, None);
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            match key.as_deref().unwrap_or_default() {
                "type" => kind = map.next_value::<Text<'de>>()?.0,
                "text" => text = map.next_value::<Text<'de>>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(match kind.as_deref() {
            Some("image_url" | "image" | "input_audio") => Part::Image,
            _ => Part::Text(text),
        })
    }
}

type FunctionCall<'a> = (Option<Cow<'a, str>>, Option<Cow<'a, str>>);

/// `tool_calls`: each call's function (name, arguments); not an array: none.
struct Calls<'a>(Vec<FunctionCall<'a>>);

impl<'de> Read<'de> for Calls<'de> {
    fn absent() -> Self {
        Calls(Vec::new())
    }
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut calls = Vec::new();
        while let Some(Call(f)) = seq.next_element::<Call<'de>>()? {
            calls.extend(f);
        }
        Ok(Calls(calls))
    }
}

/// One tool call: its `function`'s (name, arguments), when that is an object.
struct Call<'a>(Option<FunctionCall<'a>>);

impl<'de> Read<'de> for Call<'de> {
    fn absent() -> Self {
        Call(None)
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut function = None;
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            if key.as_deref() == Some("function") {
                function = map.next_value::<Function<'de>>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Call(function))
    }
}

struct Function<'a>(Option<FunctionCall<'a>>);

impl<'de> Read<'de> for Function<'de> {
    fn absent() -> Self {
        Function(None)
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let (mut name, mut arguments) = (None, None);
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            match key.as_deref().unwrap_or_default() {
                "name" => name = map.next_value::<Text<'de>>()?.0,
                "arguments" => arguments = map.next_value::<Text<'de>>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Function(Some((name, arguments))))
    }
}

/// A string, borrowed where the JSON has no escapes; any other value: None.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de> Read<'de> for Text<'de> {
    fn absent() -> Self {
        Text(None)
    }
    fn text(s: Cow<'de, str>) -> Self {
        Text(Some(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// The count as it was made before this reader: on a `serde_json::Value`.
    fn by_value(body: &[u8], enc: Encoding) -> u64 {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return 0;
        };
        let (messages, tools) = match &value {
            Value::Array(_) => (Some(&value), None),
            Value::Object(o) => (o.get("messages"), o.get("tools")),
            _ => (None, None),
        };
        let text = |v: Option<&Value>| match v {
            Some(Value::String(s)) => enc.count(s),
            _ => 0,
        };
        let mut total = 0;
        if let Some(Value::Array(messages)) = messages {
            for m in messages {
                total += PER_MESSAGE;
                let Value::Object(m) = m else { continue };
                total += text(m.get("role"));
                if let Some(Value::String(name)) = m.get("name") {
                    total += PER_NAME + enc.count(name);
                }
                total += match m.get("content") {
                    Some(Value::String(s)) => enc.count(s),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .map(|p| match p.get("type").and_then(Value::as_str) {
                            Some("image_url" | "image" | "input_audio") => PER_IMAGE,
                            _ => text(p.get("text")),
                        })
                        .sum(),
                    _ => 0,
                };
                if let Some(Value::Array(calls)) = m.get("tool_calls") {
                    for call in calls {
                        if let Some(Value::Object(f)) = call.get("function") {
                            total += text(f.get("name")) + text(f.get("arguments"));
                        }
                    }
                }
            }
            total += REPLY_PRIMING;
        }
        if let Some(tools @ Value::Array(list)) = tools {
            if !list.is_empty() {
                total += enc.count(&tools.to_string());
            }
        }
        total
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            prop_oneof![
                Just("user".to_owned()),
                Just("text".to_owned()),
                Just("image_url".to_owned()),
                "[a-z \\n\"é]{0,12}",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key = prop_oneof![
                Just("messages"),
                Just("tools"),
                Just("role"),
                Just("name"),
                Just("content"),
                Just("type"),
                Just("text"),
                Just("tool_calls"),
                Just("function"),
                Just("arguments"),
                Just("other"),
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((key, inner), 0..6).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn counts_what_the_value_walk_counted(v in json()) {
            let body = serde_json::to_vec(&v).unwrap_or_default();
            prop_assert_eq!(count(&body, Encoding::O200k), by_value(&body, Encoding::O200k));
        }
    }

    #[test]
    fn duplicate_keys_and_escapes_read_like_a_value() {
        for body in [
            &br#"{"messages":[{"role":"user","content":"a"}],"messages":[{"role":"x\"y","content":"\u00e9t\u00e9"}]}"#[..],
            br#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},7,{"type":"image"}]}],"tools":[{"a":1}]}"#,
            br#"{"messages":{"role":"user"}}"#,
            br#"[{"content":null,"tool_calls":[{"function":{"name":"f","arguments":"{}"}},{"function":3}]}]"#,
            b"[1, \"x\"] trailing",
            b"",
        ] {
            assert_eq!(count(body, Encoding::O200k), by_value(body, Encoding::O200k));
        }
    }
}
