//! Reading JSON on the request path: the bytes are checked as UTF-8 once, then parsed as text.
//!
//! serde_json's byte reader re-checks every string it hands out (keys included) as UTF-8 on its
//! own; a stream chunk is a dozen short strings, and those checks cost more than the rest of
//! its parse. Bytes that are not UTF-8 are not JSON either way.

use serde::Deserialize;

/// `data` as a `T`, or None when it is not UTF-8 JSON of that shape.
pub fn from_bytes<'a, T: Deserialize<'a>>(data: &'a [u8]) -> Option<T> {
    serde_json::from_str(std::str::from_utf8(data).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Delta<'a> {
        #[serde(borrow)]
        content: Cow<'a, str>,
    }

    #[test]
    fn reads_what_serde_json_reads_and_refuses_what_it_refuses() {
        let cases: [&[u8]; 6] = [
            br#"{"content":"h\u00e9llo"}"#,
            "{\"content\":\"héllo ✓\"}".as_bytes(),
            br#"{"content":"a\"b"}"#,
            b"{\"content\":\"\xff\"}",
            br#"{"content":1}"#,
            br#"{"content":"x""#,
        ];
        for data in cases {
            let ours = from_bytes::<Delta<'_>>(data);
            let theirs = serde_json::from_slice::<Delta<'_>>(data).ok();
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(data));
        }
        let text = from_bytes::<Delta<'_>>("{\"content\":\"héllo\"}".as_bytes());
        assert!(matches!(
            text,
            Some(Delta {
                content: Cow::Borrowed("héllo")
            })
        ));
    }
}
