//! The `when` block shared by routing, limit, budget and guardrail rules: subjects, models
//! and metadata, all of which must match (an absent field matches everything). Every rule
//! kind asks the one question [`When::matches`] of the same [`RequestFacts`].

use crate::schema::{Errors, Fields};
use serde_json::Value;

/// What rules look at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// `user:<id>`, `team:<id>` or `virtualaccount:<id>`.
    pub subject: &'a str,
    /// The model the client asked for (a virtual name or a target).
    pub model: &'a str,
    pub metadata: &'a [(String, String)],
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct When {
    pub subjects: Option<Vec<String>>,
    pub models: Option<Vec<String>>,
    pub metadata: Vec<(String, String)>,
}

/// TrueFoundry files spell virtual accounts both ways; keys use `virtualaccount:`.
pub fn normalize_subject(s: &str) -> String {
    match s.strip_prefix("virtual-account:") {
        Some(id) => format!("virtualaccount:{id}"),
        None => s.to_owned(),
    }
}

impl When {
    pub fn parse(v: &Value, path: &str, errs: &mut Errors) -> Option<Self> {
        let f = Fields::new(v, path, &["subjects", "models", "metadata"], errs)?;
        let subjects = f.string_list("subjects", errs).map(|list| {
            list.iter()
                .enumerate()
                .map(|(i, s)| {
                    let s = normalize_subject(s);
                    if !["user:", "team:", "virtualaccount:"]
                        .iter()
                        .any(|p| s.starts_with(p))
                    {
                        errs.push(
                            &format!("{path}.subjects[{i}]"),
                            "must be user:<id>, team:<id> or virtualaccount:<id>",
                        );
                    }
                    s
                })
                .collect()
        });
        Some(Self {
            subjects,
            models: f.string_list("models", errs),
            metadata: f.string_map("metadata", errs).unwrap_or_default(),
        })
    }

    /// Every field matches the request (models by exact name, metadata by key and value).
    pub fn matches(&self, facts: &RequestFacts<'_>) -> bool {
        self.matches_subject(facts.subject)
            && self
                .models
                .as_ref()
                .is_none_or(|m| m.iter().any(|m| m == facts.model))
            && self.matches_metadata(facts.metadata)
    }

    fn matches_subject(&self, subject: &str) -> bool {
        self.subjects
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s == subject))
    }

    fn matches_metadata(&self, metadata: &[(String, String)]) -> bool {
        self.metadata
            .iter()
            .all(|(k, v)| metadata.iter().any(|(mk, mv)| mk == k && mv == v))
    }
}

/// Status codes are strings in config (`"429"`), as in the published schema.
pub fn status_codes(f: &Fields<'_>, name: &str, errs: &mut Errors) -> Option<Vec<u16>> {
    let v = f.get(name)?;
    let path = f.path(name);
    let Value::Array(items) = v else {
        errs.push(
            &path,
            "expected a list of status codes as strings, e.g. [\"429\", \"503\"]",
        );
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.as_str().and_then(|s| s.parse::<u16>().ok()) {
            Some(code) if (100..=599).contains(&code) => out.push(code),
            _ => errs.push(
                &format!("{path}[{i}]"),
                "expected an HTTP status code as a string, e.g. \"429\"",
            ),
        }
    }
    Some(out)
}
