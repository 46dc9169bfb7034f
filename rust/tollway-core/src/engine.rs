//! The immutable engine compiled from config: one `admit` call per request.
//!
//! Names are interned to ids at compile time and per-key model permissions are precomputed,
//! so admission is a hash, two map lookups and an index; a denial is a value, not an error.

use crate::config::{self, KeySecret, Provider, RawConfig, ServerSettings};
use crate::metadata::{self, Metadata};
use crate::schema::{ConfigError, Errors};
use globset::{Glob, GlobSetBuilder};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub type TargetId = u32;
pub type KeyId = u32;

/// A provider model addressable as `<account>/<model>`.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub account: String,
    pub provider: Provider,
    pub base_url: String,
    pub api_key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub model_id: String,
}

#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub subject: String,
    pub metadata: Metadata,
    /// Indexed by target id.
    allowed: Vec<bool>,
}

/// Why a request is refused, with everything needed for an OpenAI-style error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    pub error_type: &'static str,
    pub code: &'static str,
    pub param: Option<&'static str>,
    pub message: String,
}

impl Denial {
    fn new(status: u16, error_type: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status,
            error_type,
            code,
            param: None,
            message,
        }
    }

    fn unauthorized(message: &str) -> Self {
        Self::new(
            401,
            "invalid_request_error",
            "invalid_api_key",
            message.to_owned(),
        )
    }
}

/// An admitted request: who it is, where it may go (in order), and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub key: KeyId,
    pub targets: Vec<TargetId>,
    pub metadata: Metadata,
}

#[derive(Debug)]
pub struct Engine {
    pub settings: ServerSettings,
    pub targets: Vec<Target>,
    target_ids: HashMap<String, TargetId>,
    pub keys: Vec<Key>,
    key_ids: HashMap<[u8; 32], KeyId>,
}

impl Engine {
    /// Compiles documents (`[{"source": ..., "doc": {...}}]`) or returns every error found.
    pub fn compile(docs: &Value) -> Result<Self, Vec<ConfigError>> {
        let mut errs = Errors::default();
        let raw = config::parse_documents(docs, &mut errs);
        let engine = Self::build(raw, &mut errs);
        if errs.is_empty() {
            Ok(engine)
        } else {
            Err(errs.list)
        }
    }

    fn build(raw: RawConfig, errs: &mut Errors) -> Self {
        let mut targets = Vec::new();
        let mut target_ids = HashMap::new();
        let mut account_names: HashMap<&str, &str> = HashMap::new();
        for acc in &raw.accounts {
            if let Some(first) = account_names.insert(&acc.name, &acc.path) {
                errs.set_source(acc.path.clone());
                errs.push(
                    "name",
                    format!(
                        "duplicate provider-account '{}' (also in {first})",
                        acc.name
                    ),
                );
                continue;
            }
            for m in &acc.models {
                let name = format!("{}/{}", acc.name, m.name);
                let id = TargetId::try_from(targets.len()).unwrap_or(TargetId::MAX);
                target_ids.insert(name.clone(), id);
                targets.push(Target {
                    name,
                    account: acc.name.clone(),
                    provider: acc.provider,
                    base_url: acc.base_url.clone(),
                    api_key: acc.api_key.clone(),
                    headers: acc.headers.clone(),
                    model_id: m.model_id.clone(),
                });
            }
        }
        let mut keys = Vec::with_capacity(raw.keys.len());
        let mut key_ids = HashMap::with_capacity(raw.keys.len());
        let mut key_names: HashMap<&str, &str> = HashMap::new();
        for k in &raw.keys {
            errs.set_source(k.source.clone());
            if let Some(first) = key_names.insert(&k.name, &k.path) {
                errs.push(
                    &format!("{}.name", k.path),
                    format!("duplicate key name '{}' (first at {first})", k.name),
                );
            }
            let hash = match &k.secret {
                KeySecret::Sha256(hex) => decode_hex(hex),
                KeySecret::Plain(plain) => Sha256::digest(plain.as_bytes()).into(),
            };
            let id = KeyId::try_from(keys.len()).unwrap_or(KeyId::MAX);
            if key_ids.insert(hash, id).is_some() {
                // Never name the key itself: say which entry repeats another.
                errs.push(&k.path, "this key's secret is the same as another key's");
            }
            let mut set = GlobSetBuilder::new();
            for (i, pattern) in k.allowed_models.iter().enumerate() {
                match Glob::new(pattern) {
                    Ok(g) => {
                        set.add(g);
                    }
                    Err(e) => errs.push(
                        &format!("{}.allowed_models[{i}]", k.path),
                        format!("invalid glob: {}", e.kind()),
                    ),
                }
            }
            let set = set.build().unwrap_or_else(|_| globset::GlobSet::empty());
            keys.push(Key {
                name: k.name.clone(),
                subject: k.subject.clone(),
                metadata: k.metadata.clone(),
                allowed: targets.iter().map(|t| set.is_match(&t.name)).collect(),
            });
        }
        errs.set_source("");
        Self {
            settings: raw.server,
            targets,
            target_ids,
            keys,
            key_ids,
        }
    }

    /// Finds the key of an `Authorization` header value (`Bearer <key>`).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<KeyId, Denial> {
        let Some(header) = authorization.map(str::trim).filter(|h| !h.is_empty()) else {
            return Err(Denial::unauthorized(
                "Missing API key: send it as 'Authorization: Bearer <key>'",
            ));
        };
        let token = match header.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => {
                return Err(Denial::unauthorized(
                    "Malformed Authorization header: expected 'Bearer <key>'",
                ))
            }
        };
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.key_ids
            .get(&hash)
            .copied()
            .ok_or_else(|| Denial::unauthorized("Invalid API key"))
    }

    /// Decides one request: key, metadata, model existence, then permission.
    pub fn admit(
        &self,
        authorization: Option<&str>,
        model: &str,
        metadata_header: Option<&[u8]>,
    ) -> Result<Admission, Denial> {
        let key_id = self.authenticate(authorization)?;
        let key = &self.keys[key_id as usize];
        let request_meta = match metadata_header {
            Some(raw) => metadata::parse(raw).map_err(|message| Denial {
                param: Some("X-TFY-METADATA"),
                ..Denial::new(400, "invalid_request_error", "invalid_metadata", message)
            })?,
            None => Vec::new(),
        };
        let Some(&target) = self.target_ids.get(model) else {
            return Err(Denial {
                param: Some("model"),
                ..Denial::new(
                    404,
                    "invalid_request_error",
                    "model_not_found",
                    format!("The model '{}' does not exist", shorten(model)),
                )
            });
        };
        if !key.allowed[target as usize] {
            return Err(Denial {
                param: Some("model"),
                ..Denial::new(
                    403,
                    "permission_error",
                    "model_not_allowed",
                    format!("This key may not use the model '{}'", shorten(model)),
                )
            });
        }
        Ok(Admission {
            key: key_id,
            targets: vec![target],
            metadata: metadata::merge(request_meta, &key.metadata),
        })
    }

    /// The model names a key may use, in config order.
    pub fn models_for(&self, key: KeyId) -> impl Iterator<Item = &str> {
        let allowed = &self.keys[key as usize].allowed;
        self.targets
            .iter()
            .zip(allowed)
            .filter(|(_, ok)| **ok)
            .map(|(t, _)| t.name.as_str())
    }
}

fn decode_hex(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    out
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= 100 {
        s.to_owned()
    } else {
        let head: String = s.chars().take(100).collect();
        format!("{head}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn docs(items: Vec<Value>) -> Value {
        Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, d)| json!({"source": format!("t.yaml#{}", i + 1), "doc": d}))
                .collect(),
        )
    }

    fn engine() -> Engine {
        Engine::compile(&docs(vec![
            json!({"type": "provider-account", "name": "mock", "provider": "openai-compatible",
                   "base_url": "http://127.0.0.1:9/v1/", "api_key": "sk-provider",
                   "models": ["gpt-4o-mini", {"name": "big", "model_id": "gpt-4o"}]}),
            json!({"type": "gateway-keys", "keys": [
                {"name": "all", "key": "secret-all-1", "subject": "user:a"},
                {"name": "small", "key_sha256": format!("sha256:{}", hex(b"secret-small")),
                 "subject": "team:t", "allowed_models": ["mock/gpt-*"], "metadata": {"team": "t"}}]}),
        ]))
        .unwrap()
    }

    fn hex(key: &[u8]) -> String {
        Sha256::digest(key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn admits_a_known_key_to_an_allowed_target() {
        let e = engine();
        let a = e
            .admit(Some("Bearer secret-all-1"), "mock/big", None)
            .unwrap();
        let t = &e.targets[a.targets[0] as usize];
        assert_eq!(
            (t.name.as_str(), t.model_id.as_str()),
            ("mock/big", "gpt-4o")
        );
        assert_eq!(
            t.base_url, "http://127.0.0.1:9/v1",
            "trailing slash is trimmed"
        );
    }

    #[test]
    fn denials_have_the_right_status_in_the_right_order() {
        let e = engine();
        let status = |auth: Option<&str>, model: &str, meta: Option<&[u8]>| {
            e.admit(auth, model, meta).err().map(|d| d.status)
        };
        assert_eq!(status(None, "mock/big", None), Some(401));
        assert_eq!(status(Some("Bearer nope-nope"), "nope", None), Some(401));
        assert_eq!(
            status(Some("Basic secret-all-1"), "mock/big", None),
            Some(401)
        );
        assert_eq!(
            status(Some("Bearer secret-all-1"), "mock/big", Some(b"[]")),
            Some(400)
        );
        assert_eq!(
            status(Some("Bearer secret-all-1"), "nope/model", None),
            Some(404)
        );
        assert_eq!(
            status(Some("bearer secret-small"), "mock/big", None),
            Some(403)
        );
        assert_eq!(
            status(Some("Bearer secret-small"), "mock/gpt-4o-mini", None),
            None
        );
    }

    #[test]
    fn key_metadata_is_merged_and_models_are_listed_per_key() {
        let e = engine();
        let a = e
            .admit(
                Some("Bearer secret-small"),
                "mock/gpt-4o-mini",
                Some(br#"{"team":"x","p":"1"}"#),
            )
            .unwrap();
        assert_eq!(
            a.metadata,
            vec![("p".into(), "1".into()), ("team".into(), "t".into())]
        );
        assert_eq!(
            e.models_for(a.key).collect::<Vec<_>>(),
            vec!["mock/gpt-4o-mini"]
        );
        assert_eq!(e.models_for(0).count(), 2);
    }

    #[test]
    fn every_error_is_reported_with_its_path_and_no_secret() {
        let errs = Engine::compile(&docs(vec![
            json!({"type": "gateway-settings", "server": {"port": "80", "colour": 1}}),
            json!({"type": "provider-account", "name": "a/b", "provider": "nope", "api_key": 5, "models": []}),
            json!({"type": "gateway-keys", "keys": [
                {"name": "k", "key": "super-secret-value", "subject": "user:x", "allowed_models": ["[" ]},
                {"name": "k", "key": "super-secret-value", "subject": "boss"},
                {"name": "k", "key": "super-secret-value", "subject": "user:y"}]}),
            json!({"type": "mystery"}),
        ]))
        .unwrap_err();
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let want = [
            "t.yaml#1: server.colour: unknown field",
            "t.yaml#1: server.port: expected a whole number, got a string",
            "t.yaml#2: name: must be 1-128 characters",
            "t.yaml#2: provider: 'nope' is not one of: openai, openai-compatible",
            "t.yaml#2: api_key: expected a string, got a number",
            "t.yaml#3: keys[1].subject: must be user:<id>",
            "t.yaml#4: type: unknown document type 'mystery'",
            "t.yaml#3: keys[2].name: duplicate key name 'k'",
            "t.yaml#3: keys[2]: this key's secret is the same as another key's",
            "t.yaml#3: keys[0].allowed_models[0]: invalid glob",
        ];
        for w in want {
            assert!(
                shown.iter().any(|s| s.starts_with(w)),
                "missing {w:?} in {shown:#?}"
            );
        }
        assert!(
            !shown.iter().any(|s| s.contains("super-secret")),
            "{shown:#?}"
        );
    }
}
