//! A small walker over JSON config values that collects every error with its path.
//!
//! serde stops at the first error; `check-config` must print all of them, so each config type
//! reads its fields through [`Fields`], which records wrong types, missing and unknown fields
//! and keeps going. Values are never echoed in messages unless the caller says the field is
//! not secret (enums), so an `api_key` with a wrong type cannot leak through an error.

use serde_json::{Map, Value};
use std::fmt;

/// One config problem: where (`keys[1].allowed_models`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.source.is_empty(), self.path.is_empty()) {
            (true, true) => write!(f, "{}", self.message),
            (true, false) => write!(f, "{}: {}", self.path, self.message),
            (false, true) => write!(f, "{}: {}", self.source, self.message),
            (false, false) => write!(f, "{}: {}: {}", self.source, self.path, self.message),
        }
    }
}

/// Errors collected while walking one document; `source` names the file and document.
#[derive(Debug, Default)]
pub struct Errors {
    source: String,
    pub list: Vec<ConfigError>,
}

impl Errors {
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            list: Vec::new(),
        }
    }

    pub fn set_source(&mut self, source: impl Into<String>) {
        self.source = source.into();
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn push(&mut self, path: &str, message: impl Into<String>) {
        self.list.push(ConfigError {
            source: self.source.clone(),
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// `parent.child` / `parent[3]`, with an empty parent meaning the document root.
pub fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// The JSON type name used in messages ("expected a string, got a number").
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The fields of one mapping, checked against the names the schema knows.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Fields<'a> {
    /// Reports a non-mapping value and every unknown field; `None` when `v` is not a mapping.
    pub fn new(v: &'a Value, path: &str, known: &[&str], errs: &mut Errors) -> Option<Self> {
        let Value::Object(map) = v else {
            errs.push(path, format!("expected a mapping, got {}", kind(v)));
            return None;
        };
        for name in map.keys() {
            if !known.contains(&name.as_str()) {
                errs.push(
                    &join(path, name),
                    format!("unknown field (known fields: {})", known.join(", ")),
                );
            }
        }
        Some(Self {
            map,
            path: path.to_owned(),
        })
    }

    pub fn path(&self, name: &str) -> String {
        join(&self.path, name)
    }

    /// The value of a field, treating an explicit `null` as absent.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn require(&self, name: &str, errs: &mut Errors) -> Option<&'a Value> {
        let v = self.get(name);
        if v.is_none() {
            errs.push(&self.path(name), "required field is missing");
        }
        v
    }

    pub fn string(&self, name: &str, errs: &mut Errors) -> Option<String> {
        let v = self.get(name)?;
        as_string(v, &self.path(name), errs)
    }

    pub fn req_string(&self, name: &str, errs: &mut Errors) -> Option<String> {
        let v = self.require(name, errs)?;
        as_string(v, &self.path(name), errs)
    }

    /// A string that must be one of `allowed`; the value is echoed (enums are never secret).
    pub fn choice(&self, name: &str, allowed: &[&str], errs: &mut Errors) -> Option<String> {
        let s = self.string(name, errs)?;
        if allowed.contains(&s.as_str()) {
            Some(s)
        } else {
            errs.push(
                &self.path(name),
                format!("'{s}' is not one of: {}", allowed.join(", ")),
            );
            None
        }
    }

    pub fn uint(&self, name: &str, min: u64, max: u64, errs: &mut Errors) -> Option<u64> {
        let v = self.get(name)?;
        let path = self.path(name);
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                errs.push(&path, format!("{n} is out of range {min}..={max}"));
                None
            }
            None => {
                errs.push(&path, format!("expected a whole number, got {}", kind(v)));
                None
            }
        }
    }

    pub fn number(&self, name: &str, errs: &mut Errors) -> Option<f64> {
        let v = self.get(name)?;
        match v.as_f64() {
            Some(n) if n >= 0.0 && n.is_finite() => Some(n),
            Some(_) => {
                errs.push(&self.path(name), "expected a non-negative number");
                None
            }
            None => {
                errs.push(
                    &self.path(name),
                    format!("expected a number, got {}", kind(v)),
                );
                None
            }
        }
    }

    pub fn boolean(&self, name: &str, errs: &mut Errors) -> Option<bool> {
        let v = self.get(name)?;
        match v {
            Value::Bool(b) => Some(*b),
            _ => {
                errs.push(
                    &self.path(name),
                    format!("expected true or false, got {}", kind(v)),
                );
                None
            }
        }
    }

    pub fn string_list(&self, name: &str, errs: &mut Errors) -> Option<Vec<String>> {
        let v = self.get(name)?;
        let path = self.path(name);
        let Value::Array(items) = v else {
            errs.push(
                &path,
                format!("expected a list of strings, got {}", kind(v)),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some(s) = as_string(item, &index(&path, i), errs) {
                out.push(s);
            }
        }
        Some(out)
    }

    /// A mapping of string to string (headers, metadata), in the order written.
    pub fn string_map(&self, name: &str, errs: &mut Errors) -> Option<Vec<(String, String)>> {
        let v = self.get(name)?;
        let path = self.path(name);
        let Value::Object(map) = v else {
            errs.push(
                &path,
                format!("expected a mapping of strings, got {}", kind(v)),
            );
            return None;
        };
        let mut out = Vec::with_capacity(map.len());
        for (k, item) in map {
            if let Some(s) = as_string(item, &join(&path, k), errs) {
                out.push((k.clone(), s));
            }
        }
        Some(out)
    }

    /// The items of a list field with their paths.
    pub fn list(&self, name: &str, errs: &mut Errors) -> Option<Vec<(String, &'a Value)>> {
        let v = self.get(name)?;
        let path = self.path(name);
        let Value::Array(items) = v else {
            errs.push(&path, format!("expected a list, got {}", kind(v)));
            return None;
        };
        Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| (index(&path, i), item))
                .collect(),
        )
    }
}

/// Client-supplied text echoed in an error, cut to `max` characters.
pub fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}...", &s[..at]),
    }
}

pub fn as_string(v: &Value, path: &str, errs: &mut Errors) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        _ => {
            errs.push(path, format!("expected a string, got {}", kind(v)));
            None
        }
    }
}

/// A key hash as config writes it (`sha256:<64 hex digits>` or bare hex), lower-cased.
pub fn parse_sha256(s: &str, path: &str, errs: &mut Errors) -> Option<String> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s).to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(hex)
    } else {
        errs.push(
            path,
            "expected sha256:<64 hex digits> (see `tollway hash-key`)",
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_and_wrong_typed_fields_are_all_reported_with_paths() {
        let v = json!({"name": 3, "colour": "red", "tags": ["a", 1]});
        let mut errs = Errors::new("f.yaml");
        let f = Fields::new(&v, "keys[1]", &["name", "tags"], &mut errs).unwrap();
        assert_eq!(f.string("name", &mut errs), None);
        assert_eq!(f.string_list("tags", &mut errs), Some(vec!["a".to_owned()]));
        let shown: Vec<String> = errs.list.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "f.yaml: keys[1].colour: unknown field (known fields: name, tags)",
                "f.yaml: keys[1].name: expected a string, got a number",
                "f.yaml: keys[1].tags[1]: expected a string, got a number",
            ]
        );
    }

    #[test]
    fn numbers_are_range_checked() {
        let v = json!({"port": 70000});
        let mut errs = Errors::new("");
        let f = Fields::new(&v, "server", &["port"], &mut errs).unwrap();
        assert_eq!(f.uint("port", 1, 65535, &mut errs), None);
        assert_eq!(
            errs.list[0].to_string(),
            "server.port: 70000 is out of range 1..=65535"
        );
    }
}
