//! `metadata-validation`: required keys, allowed values or a regex per key, unknown keys.

use super::config::ValueRule;
use super::patterns::PatternError;
use regex::Regex;

#[derive(Debug)]
enum Rule {
    Any,
    OneOf(Vec<String>),
    Pattern(Regex),
}

#[derive(Debug)]
pub struct MetadataRules {
    required: Vec<String>,
    keys: Vec<(String, Rule)>,
    allow_unknown_keys: bool,
}

/// A problem with one key; messages name the key, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataViolation {
    pub key: String,
    pub reason: &'static str,
}

impl std::fmt::Display for MetadataViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "metadata '{}' {}", self.key, self.reason)
    }
}

impl MetadataRules {
    pub fn new(
        required: &[String],
        keys: &[(String, ValueRule)],
        allow_unknown_keys: bool,
    ) -> Result<Self, PatternError> {
        let mut compiled = Vec::with_capacity(keys.len());
        for (index, (k, rule)) in keys.iter().enumerate() {
            let rule = match rule {
                ValueRule::Any => Rule::Any,
                ValueRule::OneOf(v) => Rule::OneOf(v.clone()),
                // The whole value must match, not a substring of it.
                ValueRule::Pattern(p) => {
                    Rule::Pattern(Regex::new(&format!("^(?:{p})$")).map_err(|e| PatternError {
                        index,
                        kind: e.to_string(),
                    })?)
                }
            };
            compiled.push((k.clone(), rule));
        }
        Ok(Self {
            required: required.to_vec(),
            keys: compiled,
            allow_unknown_keys,
        })
    }

    pub fn validate(&self, metadata: &[(String, String)]) -> Vec<MetadataViolation> {
        let mut out = Vec::new();
        for k in &self.required {
            if !metadata.iter().any(|(mk, _)| mk == k) {
                out.push(MetadataViolation {
                    key: k.clone(),
                    reason: "is required",
                });
            }
        }
        for (k, v) in metadata {
            match self.keys.iter().find(|(rk, _)| rk == k).map(|(_, r)| r) {
                None if !self.allow_unknown_keys && !self.required.contains(k) => {
                    out.push(MetadataViolation {
                        key: k.clone(),
                        reason: "is not an allowed key",
                    });
                }
                Some(Rule::OneOf(values)) if !values.contains(v) => {
                    out.push(MetadataViolation {
                        key: k.clone(),
                        reason: "has a value that is not allowed",
                    });
                }
                Some(Rule::Pattern(re)) if !re.is_match(v) => {
                    out.push(MetadataViolation {
                        key: k.clone(),
                        reason: "has a value that does not match its pattern",
                    });
                }
                _ => {}
            }
        }
        out
    }
}
