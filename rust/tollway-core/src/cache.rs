//! The opt-in response cache's decisions: which requests are cached (`gateway-cache-config`
//! rules, first match, or the client's `x-tfy-cache-config` header), for how long, and under
//! which key. The store itself (memory LRU or Redis) lives in Python beside the request path.
//!
//! The key is the SHA-256 of the namespace, the subject (unless the rule shares answers across
//! subjects), the API, and the request body in canonical JSON (keys sorted, no whitespace):
//! the model as requested, messages and parameters; never the client's key.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::schema::{Errors, Fields};
use crate::when::{RequestFacts, When};

/// The longest a cached answer may live: 30 days.
pub const MAX_TTL_S: u64 = 30 * 86_400;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRule {
    pub id: String,
    pub when: When,
    pub ttl_s: u64,
    pub namespace: String,
    /// Answers are shared by every subject the rule matches (default: each subject its own).
    pub shared: bool,
}

/// Everything the documents say about the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheConfig {
    pub rules: Vec<CacheRule>,
    pub settings: CacheSettings,
}

/// `gateway-settings.cache`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// `memory` (per process, LRU) or `redis` (shared by replicas).
    pub backend: String,
    pub redis_url: Option<String>,
    /// Memory backend: the most bytes of cached answers one process keeps.
    pub max_bytes: u64,
    /// Redis backend: a lookup slower than this is a miss.
    pub timeout_ms: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            backend: "memory".to_owned(),
            redis_url: None,
            max_bytes: 64 << 20,
            timeout_ms: 50,
        }
    }
}

/// A request to answer from the cache if it can, and to store otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePlan {
    /// Hex SHA-256 (see the module docs).
    pub key: String,
    pub ttl_s: u64,
    /// The matching rule, or `None` when the header asked.
    pub rule_id: Option<String>,
}

/// What the `x-tfy-cache-config` header asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheAsk {
    Exact {
        ttl_s: u64,
        namespace: String,
    },
    /// `{"type": "none"}`: neither read nor write the cache for this request.
    Bypass,
}

/// Reads one `gateway-cache-config` document's rules into `out`.
pub fn parse_rules(doc: &Value, out: &mut Vec<CacheRule>, errs: &mut Errors) {
    let Some(f) = Fields::new(doc, "", &["type", "name", "rules"], errs) else {
        return;
    };
    f.string("name", errs);
    for (path, item) in f.list("rules", errs).unwrap_or_default() {
        let known = ["id", "when", "ttl", "namespace", "shared"];
        let Some(r) = Fields::new(item, &path, &known, errs) else {
            continue;
        };
        let Some(id) = r.string("id", errs) else {
            errs.push(&r.path("id"), "required field is missing");
            continue;
        };
        if out.iter().any(|o| o.id == id) {
            errs.push(&r.path("id"), format!("duplicate rule id '{id}'"));
        }
        let when = match r.get("when") {
            Some(w) => When::parse(w, &r.path("when"), errs).unwrap_or_default(),
            None => When::default(),
        };
        let Some(ttl_s) = r.uint("ttl", 1, MAX_TTL_S, errs) else {
            if r.get("ttl").is_none() {
                errs.push(&r.path("ttl"), "required field is missing (seconds)");
            }
            continue;
        };
        out.push(CacheRule {
            id,
            when,
            ttl_s,
            namespace: r.string("namespace", errs).unwrap_or_default(),
            shared: r.boolean("shared", errs).unwrap_or(false),
        });
    }
}

/// Reads `gateway-settings.cache`.
pub fn parse_settings(v: &Value, out: &mut CacheSettings, errs: &mut Errors) {
    let known = ["backend", "redis_url", "max_bytes", "timeout_ms"];
    let Some(f) = Fields::new(v, "cache", &known, errs) else {
        return;
    };
    if let Some(b) = f.choice("backend", &["memory", "redis"], errs) {
        out.backend = b;
    }
    if let Some(url) = f.string("redis_url", errs) {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            errs.push("cache.redis_url", "must be a redis:// or rediss:// URL");
        }
        out.redis_url = Some(url);
    }
    if out.backend == "redis" && out.redis_url.is_none() {
        errs.push("cache.redis_url", "required when backend is redis");
    }
    if let Some(n) = f.uint("max_bytes", 1024, 1 << 40, errs) {
        out.max_bytes = n;
    }
    if let Some(ms) = f.uint("timeout_ms", 1, 10_000, errs) {
        out.timeout_ms = ms;
    }
}

/// Parses the `x-tfy-cache-config` header, or says what is wrong with it.
pub fn parse_header(raw: &str) -> Result<CacheAsk, String> {
    let v: Value = serde_json::from_str(raw).map_err(|_| "must be a JSON object".to_owned())?;
    let Value::Object(map) = &v else {
        return Err("must be a JSON object".to_owned());
    };
    if let Some(k) = map
        .keys()
        .find(|k| !["type", "ttl", "namespace"].contains(&k.as_str()))
    {
        return Err(format!("unknown field '{k}'"));
    }
    match map.get("type").and_then(Value::as_str) {
        Some("none") => return Ok(CacheAsk::Bypass),
        Some("exact") => {}
        _ => return Err("'type' must be \"exact\" or \"none\"".to_owned()),
    }
    let ttl_s = match map.get("ttl") {
        None => 600,
        Some(t) => t
            .as_u64()
            .filter(|t| (1..=MAX_TTL_S).contains(t))
            .ok_or_else(|| format!("'ttl' must be 1..{MAX_TTL_S} seconds"))?,
    };
    let namespace = match map.get("namespace") {
        None => String::new(),
        Some(Value::String(s)) if s.len() <= 128 => s.clone(),
        Some(_) => return Err("'namespace' must be a string of at most 128 chars".to_owned()),
    };
    Ok(CacheAsk::Exact { ttl_s, namespace })
}

/// The cache plan of one admitted request: the header wins, else the first matching rule;
/// `Ok(None)` when the request is not cached. `body` is the request as the client sent it.
pub fn plan(
    rules: &[CacheRule],
    facts: &RequestFacts<'_>,
    header: Option<&str>,
    api: &str,
    body: &[u8],
) -> Result<Option<CachePlan>, String> {
    let (ttl_s, namespace, shared, rule_id) = match header.map(parse_header).transpose()? {
        Some(CacheAsk::Bypass) => return Ok(None),
        Some(CacheAsk::Exact { ttl_s, namespace }) => (ttl_s, namespace, false, None),
        None => match rules.iter().find(|r| r.when.matches(facts)) {
            Some(r) => (r.ttl_s, r.namespace.clone(), r.shared, Some(r.id.clone())),
            None => return Ok(None),
        },
    };
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Ok(None);
    };
    let mut h = Sha256::new();
    for part in [
        "tollway-cache-v1",
        &namespace,
        if shared { "" } else { facts.subject },
        api,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    write_canonical(&value, &mut HashWriter(&mut h));
    let mut key = String::with_capacity(64);
    crate::hex::push_lower(&mut key, &h.finalize());
    Ok(Some(CachePlan {
        key,
        ttl_s,
        rule_id,
    }))
}

/// Feeds the hash as JSON is written, with no buffer in between.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// JSON with object keys sorted and no whitespace, written to the hash.
fn write_canonical(v: &Value, out: &mut HashWriter<'_>) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.0.update(b"{");
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.0.update(b",");
                }
                // Writing into the hash cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.0.update(b":");
                write_canonical(v, out);
            }
            out.0.update(b"}");
        }
        Value::Array(items) => {
            out.0.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.0.update(b",");
                }
                write_canonical(item, out);
            }
            out.0.update(b"]");
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(subject: &'a str, model: &'a str) -> RequestFacts<'a> {
        RequestFacts {
            subject,
            model,
            metadata: &[],
            tool: None,
        }
    }

    fn rule(shared: bool) -> CacheRule {
        CacheRule {
            id: "r".to_owned(),
            when: When {
                models: Some(vec!["m".to_owned()]),
                ..When::default()
            },
            ttl_s: 60,
            namespace: "ns".to_owned(),
            shared,
        }
    }

    #[test]
    fn keys_ignore_key_order_and_whitespace_but_not_content_or_subject() {
        let rules = [rule(false)];
        let key = |subject: &str, body: &str| {
            plan(&rules, &facts(subject, "m"), None, "chat", body.as_bytes())
                .unwrap()
                .unwrap()
                .key
        };
        let a = key(
            "user:a",
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        );
        let b = key(
            "user:a",
            r#"{ "messages": [{"content": "hi", "role": "user"}], "model": "m" }"#,
        );
        assert_eq!(a, b);
        assert_ne!(a, key("user:a", r#"{"model":"m","messages":[]}"#));
        assert_ne!(
            a,
            key(
                "user:b",
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#
            )
        );
        let shared = [rule(true)];
        let s = |subject: &str| {
            plan(&shared, &facts(subject, "m"), None, "chat", b"{}")
                .unwrap()
                .unwrap()
                .key
        };
        assert_eq!(s("user:a"), s("user:b"));
    }

    #[test]
    fn rules_match_first_and_the_header_wins() {
        let rules = [rule(false)];
        assert_eq!(
            plan(&rules, &facts("user:a", "other"), None, "chat", b"{}"),
            Ok(None)
        );
        let p = plan(&rules, &facts("user:a", "m"), None, "chat", b"{}");
        assert_eq!(p.unwrap().unwrap().ttl_s, 60);
        let header = r#"{"type":"exact","ttl":5,"namespace":"x"}"#;
        let p = plan(
            &rules,
            &facts("user:a", "other"),
            Some(header),
            "chat",
            b"{}",
        );
        let p = p.unwrap().unwrap();
        assert_eq!((p.ttl_s, p.rule_id), (5, None));
        let none = plan(
            &rules,
            &facts("user:a", "m"),
            Some(r#"{"type":"none"}"#),
            "chat",
            b"{}",
        );
        assert_eq!(none, Ok(None));
        for bad in [
            "x",
            r#"{"type":"semantic"}"#,
            r#"{"type":"exact","ttl":0}"#,
            r#"{"type":"exact","extra":1}"#,
        ] {
            assert!(plan(&rules, &facts("user:a", "m"), Some(bad), "chat", b"{}").is_err());
        }
    }
}
