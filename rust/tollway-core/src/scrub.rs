//! Secret scrubbing: every configured provider secret removed from what a provider sends back
//! before it reaches a client (error bodies that quote the key, echoing proxies, SSE errors).
//!
//! Built once per config as one Aho-Corasick automaton over every secret (and its JSON-escaped
//! spelling), so a body is scanned once whatever the number of secrets; a clean body is not
//! copied. The request's own client key, known only per request, is an extra needle.

use aho_corasick::{AhoCorasick, MatchKind};
use std::sync::Arc;

use memchr::memmem;

/// What a secret is replaced with.
pub const REDACTED: &[u8] = b"[REDACTED]";
/// Shorter values are not treated as secrets: scrubbing them would mangle ordinary text.
pub const MIN_SECRET_LEN: usize = 8;

#[derive(Debug, Default)]
pub struct Scrubber {
    automaton: Option<AhoCorasick>,
    shortest: usize,
}

impl Scrubber {
    /// A scrubber for `secrets`; values shorter than [`MIN_SECRET_LEN`] are ignored.
    pub fn new<S: AsRef<[u8]>>(secrets: impl IntoIterator<Item = S>) -> Self {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for s in secrets {
            let s = s.as_ref();
            if s.len() < MIN_SECRET_LEN {
                continue;
            }
            patterns.push(s.to_vec());
            // Inside a JSON string, by encoders that leave `/` alone and by those escaping it.
            patterns.extend([json_escaped(s, false), json_escaped(s, true)]);
        }
        patterns.sort();
        patterns.dedup();
        let shortest = patterns.iter().map(Vec::len).min().unwrap_or(0);
        // Leftmost-longest: a secret that contains another is removed whole.
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .ok()
            .filter(|_| !patterns.is_empty());
        Self {
            automaton,
            shortest,
        }
    }

    /// True when there is no configured secret (only a per-request one can be scrubbed).
    pub fn is_empty(&self) -> bool {
        self.automaton.is_none()
    }

    /// `data` with every secret (and `extra`, when at least [`MIN_SECRET_LEN`] long) replaced
    /// by [`REDACTED`]; `None` when there was nothing to replace.
    pub fn scrub(&self, data: &[u8], extra: Option<&[u8]>) -> Option<Vec<u8>> {
        let extra = extra.filter(|e| e.len() >= MIN_SECRET_LEN && e.len() <= data.len());
        self.scrub_with(data, extra.map(memmem::Finder::new).as_ref())
    }

    fn scrub_with(&self, data: &[u8], extra: Option<&memmem::Finder<'_>>) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        if let Some(ac) = &self.automaton {
            if data.len() >= self.shortest && ac.find(data).is_some() {
                out = Some(ac.replace_all_bytes(data, &vec![REDACTED; ac.patterns_len()]));
            }
        }
        if let Some(needle) = extra {
            let current = out.as_deref().unwrap_or(data);
            if needle.find(current).is_some() {
                out = Some(replace_all(current, needle));
            }
        }
        out
    }
}

/// One request's scrubbing: the config's secrets and the request's own key, whose searcher is
/// built once (a stream scrubs every event it relays).
#[derive(Debug)]
pub struct RequestScrub {
    scrubber: Arc<Scrubber>,
    extra: Option<memmem::Finder<'static>>,
}

impl RequestScrub {
    pub fn new(scrubber: Arc<Scrubber>, extra: Option<&[u8]>) -> Self {
        let extra = extra
            .filter(|e| e.len() >= MIN_SECRET_LEN)
            .map(|e| memmem::Finder::new(e).into_owned());
        Self { scrubber, extra }
    }

    /// As [`Scrubber::scrub`] with this request's key.
    pub fn scrub(&self, data: &[u8]) -> Option<Vec<u8>> {
        let extra = self
            .extra
            .as_ref()
            .filter(|f| f.needle().len() <= data.len());
        self.scrubber.scrub_with(data, extra)
    }
}

fn replace_all(data: &[u8], needle: &memmem::Finder<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut last = 0;
    let len = needle.needle().len();
    for at in needle.find_iter(data) {
        if at < last {
            continue;
        }
        out.extend_from_slice(&data[last..at]);
        out.extend_from_slice(REDACTED);
        last = at + len;
    }
    out.extend_from_slice(&data[last..]);
    out
}

/// The spelling of `s` inside a JSON string (a PEM private key's line breaks as `\n`), with
/// `/` escaped too when `slash` (some encoders do).
fn json_escaped(s: &[u8], slash: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for &b in s {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            b'/' if slash => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_request_scrub_removes_the_request_key_like_a_per_call_extra() {
        let s = Arc::new(Scrubber::new(["sk-provider-secret"]));
        let key = b"client-key-123456";
        let r = RequestScrub::new(Arc::clone(&s), Some(key));
        for body in [
            &b"sk-provider-secret and client-key-123456, client-key-123456"[..],
            b"only client-key-123456",
            b"client-key-12345",
            b"clean",
        ] {
            assert_eq!(r.scrub(body), s.scrub(body, Some(key)));
        }
        let out = r.scrub(b"x client-key-123456 y").expect("found");
        assert_eq!(out, b"x [REDACTED] y");
        // A key shorter than MIN_SECRET_LEN is not scrubbed: it would mangle ordinary text.
        assert!(RequestScrub::new(s, Some(b"short"))
            .scrub(b"a short one")
            .is_none());
    }

    #[test]
    fn replaces_every_secret_and_keeps_clean_bodies() {
        let s = Scrubber::new(["sk-provider-secret", "other-secret-value", "short"]);
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-provider-secret (other-secret-value) short"}}"#;
        let out = s.scrub(body, None).expect("found");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(!text.contains("sk-provider-secret") && !text.contains("other-secret-value"));
        assert!(text.contains("[REDACTED] ([REDACTED]) short"));
        assert!(s.scrub(b"nothing to see", None).is_none());
    }

    #[test]
    fn json_escaped_spelling_and_client_key() {
        let s = Scrubber::new(["abc/def/ghi"]);
        let out = s.scrub(
            br#""abc\/def\/ghi" and client-key-123""#,
            Some(b"client-key-123"),
        );
        assert_eq!(
            out.as_deref(),
            Some(&br#""[REDACTED]" and [REDACTED]""#[..])
        );
    }

    #[test]
    fn a_pem_key_is_found_with_its_line_breaks_escaped() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIIEv/abc\n-----END PRIVATE KEY-----\n";
        let s = Scrubber::new([key]);
        let echoed = serde_json::to_vec(&serde_json::json!({"message": key})).expect("json");
        let out = s.scrub(&echoed, None).expect("found");
        assert_eq!(out, br#"{"message":"[REDACTED]"}"#);
    }

    #[test]
    fn nothing_configured() {
        let s = Scrubber::new(Vec::<&[u8]>::new());
        assert!(s.is_empty());
        assert!(s.scrub(b"client-key-123", None).is_none());
        assert_eq!(
            s.scrub(b"x client-key-123 y", Some(b"client-key-123"))
                .as_deref(),
            Some(&b"x [REDACTED] y"[..])
        );
    }

    proptest! {
        #[test]
        fn no_secret_survives(prefix in ".{0,40}", suffix in ".{0,40}", secret in "[a-zA-Z0-9/_-]{8,30}") {
            let s = Scrubber::new([secret.as_bytes()]);
            let body = format!("{prefix}{secret}{suffix}{secret}");
            let out = s.scrub(body.as_bytes(), None).expect("found");
            prop_assert!(memmem::find(&out, secret.as_bytes()).is_none());
        }
    }
}
