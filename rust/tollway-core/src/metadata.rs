//! `X-TFY-METADATA`: a JSON object of short string values, parsed and validated per request.

use crate::config::METADATA_VALUE_MAX_CHARS;
use serde_json::Value;

/// At most this many keys; metadata becomes labels and rule inputs, so it stays small.
pub const MAX_KEYS: usize = 64;
pub const MAX_KEY_CHARS: usize = 128;
/// A header longer than this is refused before parsing.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

pub type Metadata = Vec<(String, String)>;

/// Parses the header value; the error is a client-facing message (no echo of long input).
pub fn parse(raw: &[u8]) -> Result<Metadata, String> {
    if raw.len() > MAX_HEADER_BYTES {
        return Err(format!(
            "X-TFY-METADATA is longer than {MAX_HEADER_BYTES} bytes"
        ));
    }
    let value: Value = serde_json::from_slice(raw)
        .map_err(|e| format!("X-TFY-METADATA is not valid JSON ({e})"))?;
    let Value::Object(map) = value else {
        return Err(format!(
            "X-TFY-METADATA must be a JSON object of string values, got {}",
            crate::schema::kind(&value)
        ));
    };
    if map.len() > MAX_KEYS {
        return Err(format!(
            "X-TFY-METADATA has {} keys; at most {MAX_KEYS} are allowed",
            map.len()
        ));
    }
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let shown = crate::schema::shorten(&k, 40);
        if k.is_empty() || k.chars().count() > MAX_KEY_CHARS {
            return Err(format!(
                "X-TFY-METADATA keys must be 1-{MAX_KEY_CHARS} characters"
            ));
        }
        let Value::String(s) = v else {
            return Err(format!(
                "X-TFY-METADATA value of '{shown}' must be a string, got {}",
                crate::schema::kind(&v)
            ));
        };
        if s.chars().count() > METADATA_VALUE_MAX_CHARS {
            return Err(format!(
                "X-TFY-METADATA value of '{shown}' is longer than {METADATA_VALUE_MAX_CHARS} characters"
            ));
        }
        out.push((k, s));
    }
    Ok(out)
}

/// Merges key metadata over request metadata: what the key says cannot be overridden.
pub fn merge(request: Metadata, key: &[(String, String)]) -> Metadata {
    if key.is_empty() {
        return request;
    }
    let mut out: Metadata = request
        .into_iter()
        .filter(|(k, _)| !key.iter().any(|(kk, _)| kk == k))
        .collect();
    out.extend(key.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_an_object_of_strings_in_order() {
        let m = parse(br#"{"project_id": "p1", "env": "prod"}"#).unwrap();
        assert_eq!(
            m,
            vec![
                ("project_id".into(), "p1".into()),
                ("env".into(), "prod".into())
            ]
        );
    }

    #[test]
    fn rejects_each_invalid_shape_with_a_message_naming_it() {
        let cases: [(&[u8], &str); 6] = [
            (b"[1]", "must be a JSON object of string values, got a list"),
            (b"{\"a\": 1}", "value of 'a' must be a string, got a number"),
            (b"{\"a\": null}", "value of 'a' must be a string, got null"),
            (
                b"{\"a\": {\"b\": \"c\"}}",
                "value of 'a' must be a string, got a mapping",
            ),
            (b"{\"a\": ", "is not valid JSON"),
            (b"{\"\": \"x\"}", "keys must be 1-128 characters"),
        ];
        for (raw, want) in cases {
            let err = parse(raw).unwrap_err();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        let long = format!("{{\"k\": \"{}\"}}", "é".repeat(129));
        assert!(parse(long.as_bytes())
            .unwrap_err()
            .contains("longer than 128 characters"));
        let ok = format!("{{\"k\": \"{}\"}}", "é".repeat(128));
        assert!(
            parse(ok.as_bytes()).is_ok(),
            "128 characters (256 bytes) are allowed"
        );
    }

    #[test]
    fn key_metadata_wins_over_request_metadata() {
        let req = vec![("team".into(), "evil".into()), ("p".into(), "1".into())];
        let key = vec![("team".to_owned(), "core".to_owned())];
        assert_eq!(
            merge(req, &key),
            vec![("p".into(), "1".into()), ("team".into(), "core".into())]
        );
    }

    fn valid_map() -> impl Strategy<Value = std::collections::BTreeMap<String, String>> {
        proptest::collection::btree_map("\\PC{1,20}", "\\PC{0,128}", 0..10)
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&raw);
        }

        #[test]
        fn never_panics_on_arbitrary_json(v in arb_json()) {
            let raw = serde_json::to_vec(&v).unwrap();
            let valid = match &v {
                Value::Object(m) => m.len() <= MAX_KEYS && m.iter().all(|(k, v)| {
                    !k.is_empty() && k.chars().count() <= MAX_KEY_CHARS
                        && v.as_str().is_some_and(|s| s.chars().count() <= METADATA_VALUE_MAX_CHARS)
                }),
                _ => false,
            };
            prop_assert_eq!(parse(&raw).is_ok(), valid);
        }

        #[test]
        fn accepts_exactly_the_valid_objects_and_round_trips(m in valid_map()) {
            let raw = serde_json::to_vec(&m).unwrap();
            let parsed = parse(&raw).unwrap();
            let back: std::collections::BTreeMap<String, String> = parsed.into_iter().collect();
            prop_assert_eq!(back, m);
        }

        #[test]
        fn rejects_values_over_the_limit(k in "\\PC{1,20}", n in 129usize..400) {
            let raw = serde_json::to_vec(&serde_json::json!({ k: "x".repeat(n) })).unwrap();
            prop_assert!(parse(&raw).is_err());
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            "\\PC{0,140}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("\\PC{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
