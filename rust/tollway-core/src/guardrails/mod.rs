//! Guardrails: config, the built-in scanners (PII, secrets, prompt injection, user regexes,
//! metadata rules) and redaction, compiled once per config into an immutable [`GuardrailSet`].
//!
//! Findings carry a category and byte offsets, never the matched text, so nothing built from
//! them (logs, error bodies, spans) can leak what was found. Webhooks are configured here and
//! called from Python (`tollway.guardrails.webhook`).

pub mod config;
pub mod injection;
pub mod metadata_rules;
pub mod patterns;
pub mod phase;
pub mod pii;
pub mod redact;
pub mod secrets;

pub use config::{parse, GuardrailsConfig, KindOptions, Operation, Strategy};
pub use metadata_rules::{MetadataRules, MetadataViolation};
pub use phase::{Outcome, Phase, PhaseRun, Run, Verdict};
pub use redact::StreamRedactor;

use crate::schema::{ConfigError, Errors};
use crate::when::{RequestFacts, When};
use injection::InjectionScanner;
use patterns::{PatternSet, Spec};
use std::sync::Arc;

/// Index into [`GuardrailSet::guardrails`].
pub type GuardrailId = u32;

/// Something a scanner found: what (`EMAIL`, `AWS_ACCESS_KEY`) and where (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub category: Arc<str>,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug)]
pub enum Scanner {
    /// pii, secrets and regex: spans that validate flags and mutate redacts.
    Patterns(Arc<PatternSet>),
    Injection(Box<InjectionScanner>),
    /// Called from Python; Rust only holds the config.
    Webhook {
        url: String,
        timeout_ms: u64,
        headers: Vec<(String, String)>,
    },
    Metadata(MetadataRules),
}

#[derive(Debug)]
pub struct Guardrail {
    pub name: String,
    pub group: Option<String>,
    pub kind: &'static str,
    pub operation: Operation,
    pub strategy: Strategy,
    pub scanner: Scanner,
}

#[derive(Debug)]
pub struct GuardrailRule {
    pub id: String,
    pub when: When,
    pub input: Vec<GuardrailId>,
    pub output: Vec<GuardrailId>,
    pub tool_pre: Vec<GuardrailId>,
    pub tool_post: Vec<GuardrailId>,
}

/// The `X-TFY-GUARDRAILS` fields, in the order errors list them.
pub const HEADER_FIELDS: [&str; 4] = [
    "llm_input_guardrails",
    "llm_output_guardrails",
    "mcp_tool_pre_invoke_guardrails",
    "mcp_tool_post_invoke_guardrails",
];

/// The guardrails one request runs, by id, and the rule that chose them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub input: Vec<GuardrailId>,
    pub output: Vec<GuardrailId>,
    /// For MCP tool calls: run on a tool's arguments, and on its result.
    pub tool_pre: Vec<GuardrailId>,
    pub tool_post: Vec<GuardrailId>,
    /// The index of the guardrails rule that matched.
    pub rule: Option<usize>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.input.is_empty()
            && self.output.is_empty()
            && self.tool_pre.is_empty()
            && self.tool_post.is_empty()
    }
}

/// One built-in guardrail run on one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub guardrail: GuardrailId,
    pub flagged: bool,
    /// The prompt-injection score; `None` for the other kinds.
    pub score: Option<f64>,
    pub findings: Vec<Finding>,
}

/// Compiled guardrails and rules; immutable, shared by every request of one config.
#[derive(Debug, Default)]
pub struct GuardrailSet {
    pub guardrails: Vec<Guardrail>,
    pub rules: Vec<GuardrailRule>,
}

fn specs_for(all: &'static [Spec], categories: Option<&Vec<String>>) -> Vec<Spec> {
    all.iter()
        .filter(|s| categories.is_none_or(|c| c.iter().any(|c| c == s.category)))
        .copied()
        .collect()
}

impl GuardrailSet {
    /// Builds every scanner once and resolves the names rules refer to.
    pub fn compile(cfg: &GuardrailsConfig) -> Result<Self, Vec<ConfigError>> {
        let mut errs = Errors::new("");
        let mut guardrails = Vec::with_capacity(cfg.guardrails.len());
        for g in &cfg.guardrails {
            errs.set_source(g.source.clone());
            let built = match &g.options {
                KindOptions::Pii { categories } => {
                    PatternSet::from_specs(&specs_for(pii::SPECS, categories.as_ref()))
                        .map(|p| Scanner::Patterns(Arc::new(p)))
                }
                KindOptions::Secrets { categories } => {
                    PatternSet::from_specs(&specs_for(secrets::SPECS, categories.as_ref()))
                        .map(|p| Scanner::Patterns(Arc::new(p)))
                }
                KindOptions::Regex { patterns } => PatternSet::new(
                    patterns
                        .iter()
                        .map(|p| (Arc::from(p.name.as_str()), p.pattern.clone(), None)),
                )
                .map(|p| Scanner::Patterns(Arc::new(p))),
                KindOptions::PromptInjection { threshold } => {
                    InjectionScanner::new(*threshold).map(|s| Scanner::Injection(Box::new(s)))
                }
                KindOptions::Webhook {
                    url,
                    timeout_ms,
                    headers,
                } => Ok(Scanner::Webhook {
                    url: url.clone(),
                    timeout_ms: *timeout_ms,
                    headers: headers.clone(),
                }),
                KindOptions::MetadataValidation {
                    required,
                    keys,
                    allow_unknown_keys,
                } => MetadataRules::new(required, keys, *allow_unknown_keys).map(Scanner::Metadata),
            };
            match built {
                Ok(scanner) => guardrails.push(Guardrail {
                    name: g.name.clone(),
                    group: g.group.clone(),
                    kind: g.options.kind_name(),
                    operation: g.operation,
                    strategy: g.strategy,
                    scanner,
                }),
                Err(e) => errs.push(&g.path, format!("cannot compile: {}", e.kind)),
            }
        }
        let mut set = Self {
            guardrails,
            rules: Vec::with_capacity(cfg.rules.len()),
        };
        for r in &cfg.rules {
            errs.set_source(r.source.clone());
            let input = set.resolve_list(
                &r.input,
                &format!("{}.llm_input_guardrails", r.path),
                &mut errs,
            );
            let output = set.resolve_list(
                &r.output,
                &format!("{}.llm_output_guardrails", r.path),
                &mut errs,
            );
            for (i, id) in output.iter().enumerate() {
                if set.guardrails[*id as usize].kind == "metadata-validation" {
                    errs.push(
                        &format!("{}.llm_output_guardrails[{i}]", r.path),
                        "metadata-validation checks the request; list it in llm_input_guardrails",
                    );
                }
            }
            let tool_pre = set.resolve_list(
                &r.tool_pre,
                &format!("{}.mcp_tool_pre_invoke_guardrails", r.path),
                &mut errs,
            );
            let tool_post = set.resolve_list(
                &r.tool_post,
                &format!("{}.mcp_tool_post_invoke_guardrails", r.path),
                &mut errs,
            );
            set.rules.push(GuardrailRule {
                id: r.id.clone(),
                when: r.when.clone(),
                input,
                output,
                tool_pre,
                tool_post,
            });
        }
        if errs.is_empty() {
            Ok(set)
        } else {
            Err(errs.list)
        }
    }

    fn resolve_list(&self, names: &[String], path: &str, errs: &mut Errors) -> Vec<GuardrailId> {
        let mut out = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            match self.id(name) {
                Some(id) if out.contains(&id) => {
                    errs.push(
                        &format!("{path}[{i}]"),
                        format!("guardrail '{name}' is listed twice"),
                    );
                }
                Some(id) => out.push(id),
                None => errs.push(
                    &format!("{path}[{i}]"),
                    format!(
                        "unknown guardrail '{name}' (known: {})",
                        self.names().join(", ")
                    ),
                ),
            }
        }
        out
    }

    pub fn names(&self) -> Vec<&str> {
        self.guardrails.iter().map(|g| g.name.as_str()).collect()
    }

    /// A guardrail by its name, or by `<group>/<name>` where the group is the `name` of its
    /// `gateway-guardrails-config` document (as TrueFoundry addresses them).
    pub fn id(&self, name: &str) -> Option<GuardrailId> {
        let found = self
            .guardrails
            .iter()
            .position(|g| g.name == name)
            .or_else(|| {
                let (group, name) = name.split_once('/')?;
                self.guardrails
                    .iter()
                    .position(|g| g.name == name && g.group.as_deref() == Some(group))
            });
        found.and_then(|i| u32::try_from(i).ok())
    }

    pub fn get(&self, id: GuardrailId) -> Option<&Guardrail> {
        self.guardrails.get(id as usize)
    }

    /// The guardrails of one request: the first matching rule's, then those `X-TFY-GUARDRAILS`
    /// adds (each id once, in order). The error is a client-facing message for a 400.
    pub fn select(
        &self,
        facts: &RequestFacts<'_>,
        header: Option<&[u8]>,
    ) -> Result<Selection, String> {
        let mut sel = Selection::default();
        // A tool call takes the first matching rule that names tool guardrails, a model call
        // the first that names llm ones: rules of one kind never shadow the other's.
        let names_some = |r: &GuardrailRule| {
            if facts.tool.is_some() {
                !(r.tool_pre.is_empty() && r.tool_post.is_empty())
            } else {
                !(r.input.is_empty() && r.output.is_empty())
            }
        };
        if let Some(r) = self
            .rules
            .iter()
            .position(|r| names_some(r) && r.when.matches(facts))
        {
            let rule = &self.rules[r];
            sel.input.clone_from(&rule.input);
            sel.output.clone_from(&rule.output);
            sel.tool_pre.clone_from(&rule.tool_pre);
            sel.tool_post.clone_from(&rule.tool_post);
            sel.rule = Some(r);
        }
        if let Some(raw) = header {
            self.add_header(raw, &mut sel)?;
        }
        Ok(sel)
    }

    /// `X-TFY-GUARDRAILS: {"llm_input_guardrails": [..], "llm_output_guardrails": [..],
    /// "mcp_tool_pre_invoke_guardrails": [..], "mcp_tool_post_invoke_guardrails": [..]}`, names
    /// or `<group>/<name>`. Names are echoed in errors: they are config, and the client wrote them.
    fn add_header(&self, raw: &[u8], sel: &mut Selection) -> Result<(), String> {
        const MAX: usize = 4096;
        if raw.len() > MAX {
            return Err(format!("X-TFY-GUARDRAILS is longer than {MAX} bytes"));
        }
        let v: serde_json::Value = serde_json::from_slice(raw)
            .map_err(|e| format!("X-TFY-GUARDRAILS is not valid JSON ({e})"))?;
        let serde_json::Value::Object(map) = v else {
            return Err("X-TFY-GUARDRAILS must be a JSON object".to_owned());
        };
        for (k, v) in &map {
            let (list, checks_output) = match k.as_str() {
                "llm_input_guardrails" => (&mut sel.input, false),
                "llm_output_guardrails" => (&mut sel.output, true),
                "mcp_tool_pre_invoke_guardrails" => (&mut sel.tool_pre, false),
                "mcp_tool_post_invoke_guardrails" => (&mut sel.tool_post, true),
                _ => {
                    return Err(format!(
                        "X-TFY-GUARDRAILS has an unknown field '{}' (known: {})",
                        crate::schema::shorten(k, 64),
                        HEADER_FIELDS.join(", ")
                    ))
                }
            };
            let items = v
                .as_array()
                .ok_or_else(|| format!("X-TFY-GUARDRAILS {k} must be a list of names"))?;
            for item in items {
                let name = item
                    .as_str()
                    .ok_or_else(|| format!("X-TFY-GUARDRAILS {k} must be a list of names"))?;
                let id = self.id(name).ok_or_else(|| {
                    format!(
                        "unknown guardrail '{}' in X-TFY-GUARDRAILS {k}",
                        crate::schema::shorten(name, 100)
                    )
                })?;
                if checks_output && self.guardrails[id as usize].kind == "metadata-validation" {
                    return Err(format!(
                        "guardrail '{name}' checks the request; list it in llm_input_guardrails"
                    ));
                }
                if !list.contains(&id) {
                    list.push(id);
                }
            }
        }
        Ok(())
    }

    /// Runs one built-in guardrail on a text; `None` for webhooks and metadata validation,
    /// which do not look at text.
    pub fn check(&self, id: GuardrailId, text: &str) -> Option<Check> {
        match &self.get(id)?.scanner {
            Scanner::Patterns(p) => {
                let mut findings = Vec::new();
                p.findings(text, &mut findings);
                findings.sort_by_key(|f| (f.start, f.end));
                Some(Check {
                    guardrail: id,
                    flagged: !findings.is_empty(),
                    score: None,
                    findings,
                })
            }
            Scanner::Injection(s) => {
                let r = s.score(text);
                Some(Check {
                    guardrail: id,
                    flagged: r.flagged,
                    score: Some(r.score),
                    findings: r.findings,
                })
            }
            Scanner::Webhook { .. } | Scanner::Metadata(_) => None,
        }
    }

    /// Findings of every text-scanning guardrail in `ids`, by start offset.
    pub fn scan(&self, ids: &[GuardrailId], text: &str) -> Vec<(GuardrailId, Finding)> {
        let mut out = Vec::new();
        for &id in ids {
            if let Some(c) = self.check(id, text) {
                out.extend(c.findings.into_iter().map(|f| (id, f)));
            }
        }
        out.sort_by_key(|(_, f)| (f.start, f.end));
        out
    }

    fn pattern_sets(&self, ids: &[GuardrailId]) -> Vec<&Arc<PatternSet>> {
        ids.iter()
            .filter_map(|&id| match &self.get(id)?.scanner {
                Scanner::Patterns(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// Redacts with the pii, secrets and regex guardrails in `ids` (others are skipped) in one
    /// pass, which equals running them one after another since placeholders match nothing.
    pub fn redact(&self, ids: &[GuardrailId], text: &str) -> (String, Vec<Finding>) {
        let sets: Vec<&PatternSet> = self
            .pattern_sets(ids)
            .into_iter()
            .map(AsRef::as_ref)
            .collect();
        redact::redact(&sets, text)
    }

    /// A redactor for one stream; cheap (a DFA cache per guardrail).
    pub fn stream_redactor(&self, ids: &[GuardrailId]) -> StreamRedactor {
        StreamRedactor::new(self.pattern_sets(ids).into_iter().cloned().collect())
    }

    /// Violations of a metadata-validation guardrail; empty for other kinds.
    pub fn validate_metadata(
        &self,
        id: GuardrailId,
        metadata: &[(String, String)],
    ) -> Vec<MetadataViolation> {
        match self.get(id).map(|g| &g.scanner) {
            Some(Scanner::Metadata(m)) => m.validate(metadata),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
