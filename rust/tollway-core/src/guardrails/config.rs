//! `type: gateway-guardrails-config`: named guardrails and the rules that pick them, read
//! through the schema walker so every problem is reported with its path.

use super::patterns::check_pattern;
use super::{injection, pii, secrets};
use crate::schema::{Errors, Fields};
use crate::when::When;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Validate,
    Mutate,
}

impl Operation {
    pub const NAMES: [&'static str; 2] = ["validate", "mutate"];

    pub fn name(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Mutate => "mutate",
        }
    }
}

/// What a finding or an error does to the request; the rollout path is
/// audit -> enforce_but_ignore_on_error -> enforce, spelled `mode: audit -> enforce -> strict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Enforce,
    EnforceButIgnoreOnError,
    Audit,
}

impl Strategy {
    pub const NAMES: [&'static str; 3] = ["enforce", "enforce_but_ignore_on_error", "audit"];
    /// The same three by the rollout names of `mode:`; note that `mode: enforce` lets a
    /// request through when the guardrail itself fails, like `enforce_but_ignore_on_error`.
    pub const MODE_NAMES: [&'static str; 3] = ["audit", "enforce", "strict"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enforce" => Some(Self::Enforce),
            "enforce_but_ignore_on_error" => Some(Self::EnforceButIgnoreOnError),
            "audit" => Some(Self::Audit),
            _ => None,
        }
    }

    fn from_mode(s: &str) -> Option<Self> {
        match s {
            "audit" => Some(Self::Audit),
            "enforce" => Some(Self::EnforceButIgnoreOnError),
            "strict" => Some(Self::Enforce),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::EnforceButIgnoreOnError => "enforce_but_ignore_on_error",
            Self::Audit => "audit",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserPattern {
    pub name: String,
    pub pattern: String,
}

/// One metadata key's rule: a list of allowed values or a regex the whole value must match.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueRule {
    Any,
    OneOf(Vec<String>),
    Pattern(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum KindOptions {
    Pii {
        categories: Option<Vec<String>>,
    },
    Secrets {
        categories: Option<Vec<String>>,
    },
    PromptInjection {
        threshold: f64,
    },
    Regex {
        patterns: Vec<UserPattern>,
    },
    Webhook {
        url: String,
        timeout_ms: u64,
        headers: Vec<(String, String)>,
    },
    MetadataValidation {
        required: Vec<String>,
        keys: Vec<(String, ValueRule)>,
        allow_unknown_keys: bool,
    },
}

impl KindOptions {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Pii { .. } => "pii",
            Self::Secrets { .. } => "secrets",
            Self::PromptInjection { .. } => "prompt-injection",
            Self::Regex { .. } => "regex",
            Self::Webhook { .. } => "webhook",
            Self::MetadataValidation { .. } => "metadata-validation",
        }
    }
}

pub const KIND_NAMES: [&str; 6] = [
    "pii",
    "secrets",
    "prompt-injection",
    "regex",
    "webhook",
    "metadata-validation",
];

pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 1_000;

#[derive(Debug, Clone, PartialEq)]
pub struct GuardrailConfig {
    pub source: String,
    pub path: String,
    pub name: String,
    /// The `name` of the document it is in: `X-TFY-GUARDRAILS` may say `<group>/<name>`.
    pub group: Option<String>,
    pub operation: Operation,
    pub strategy: Strategy,
    pub options: KindOptions,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GuardrailRuleConfig {
    pub source: String,
    pub path: String,
    pub id: String,
    pub when: When,
    pub input: Vec<String>,
    pub output: Vec<String>,
    /// `mcp_tool_pre_invoke_guardrails` / `mcp_tool_post_invoke_guardrails`.
    pub tool_pre: Vec<String>,
    pub tool_post: Vec<String>,
}

/// Every guardrails document's content, in file order; names resolve in `GuardrailSet::compile`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuardrailsConfig {
    pub guardrails: Vec<GuardrailConfig>,
    pub rules: Vec<GuardrailRuleConfig>,
}

const COMMON: [&str; 5] = ["name", "kind", "operation", "enforcing_strategy", "mode"];
/// Options by kind; an option given to a kind it does not fit is an error naming the kind.
const OPTIONS: [(&str, &[&str]); 6] = [
    ("pii", &["categories"]),
    ("secrets", &["categories"]),
    ("prompt-injection", &["threshold"]),
    ("regex", &["patterns"]),
    ("webhook", &["url", "timeout_ms", "headers"]),
    (
        "metadata-validation",
        &["required", "keys", "allow_unknown_keys"],
    ),
];

pub fn parse(doc: &Value, out: &mut GuardrailsConfig, errs: &mut Errors) {
    let Some(f) = Fields::new(doc, "", &["type", "name", "guardrails", "rules"], errs) else {
        return;
    };
    let group = f.string("name", errs);
    for (path, item) in f.list("guardrails", errs).unwrap_or_default() {
        if let Some(mut g) = parse_guardrail(item, &path, errs) {
            g.group.clone_from(&group);
            if out.guardrails.iter().any(|o| o.name == g.name) {
                errs.push(
                    &format!("{path}.name"),
                    format!("duplicate guardrail name '{}'", g.name),
                );
            } else {
                out.guardrails.push(g);
            }
        }
    }
    for (path, item) in f.list("rules", errs).unwrap_or_default() {
        if let Some(r) = parse_rule(item, &path, errs) {
            if out.rules.iter().any(|o| o.id == r.id) {
                errs.push(
                    &format!("{path}.id"),
                    format!("duplicate rule id '{}'", r.id),
                );
            } else {
                out.rules.push(r);
            }
        }
    }
}

fn parse_guardrail(v: &Value, path: &str, errs: &mut Errors) -> Option<GuardrailConfig> {
    let mut known: Vec<&str> = COMMON.to_vec();
    for (_, opts) in OPTIONS {
        known.extend(
            opts.iter()
                .filter(|o| !known.contains(o))
                .collect::<Vec<_>>(),
        );
    }
    let f = Fields::new(v, path, &known, errs)?;
    let name = f.req_string("name", errs);
    if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        errs.push(&f.path("name"), "must not be empty");
    }
    let kind = f
        .require("kind", errs)
        .and(f.choice("kind", &KIND_NAMES, errs));
    let operation = match f.choice("operation", &Operation::NAMES, errs).as_deref() {
        Some("mutate") => Some(Operation::Mutate),
        Some(_) => Some(Operation::Validate),
        None if f.has("operation") => None,
        None => Some(Operation::Validate),
    };
    let strategy = parse_strategy(&f, errs);
    let kind = kind?;
    for (k, opts) in OPTIONS {
        if k == kind {
            continue;
        }
        for o in opts.iter() {
            let fits = OPTIONS.iter().any(|(kk, oo)| *kk == kind && oo.contains(o));
            if !fits && f.has(o) {
                errs.push(&f.path(o), format!("'{o}' does not apply to kind {kind}"));
            }
        }
    }
    let options = parse_options(&f, &kind, errs);
    let operation = operation?;
    if operation == Operation::Mutate
        && matches!(kind.as_str(), "prompt-injection" | "metadata-validation")
    {
        errs.push(
            &f.path("operation"),
            format!("kind {kind} can only validate"),
        );
    }
    Some(GuardrailConfig {
        group: None,
        source: errs.source().to_owned(),
        path: path.to_owned(),
        name: name?,
        operation,
        strategy: strategy?,
        options: options?,
    })
}

/// `enforcing_strategy` or `mode` (either spelling, not both); enforce when neither is given.
fn parse_strategy(f: &Fields<'_>, errs: &mut Errors) -> Option<Strategy> {
    match (f.has("enforcing_strategy"), f.has("mode")) {
        (true, true) => {
            errs.push(
                &f.path("mode"),
                "give either mode (audit|enforce|strict) or enforcing_strategy \
                 (audit|enforce_but_ignore_on_error|enforce), not both",
            );
            None
        }
        (true, false) => f
            .choice("enforcing_strategy", &Strategy::NAMES, errs)
            .and_then(|s| Strategy::parse(&s)),
        (false, true) => f
            .choice("mode", &Strategy::MODE_NAMES, errs)
            .and_then(|s| Strategy::from_mode(&s)),
        (false, false) => Some(Strategy::Enforce),
    }
}

fn parse_options(f: &Fields<'_>, kind: &str, errs: &mut Errors) -> Option<KindOptions> {
    Some(match kind {
        "pii" => KindOptions::Pii {
            categories: categories(f, pii::SPECS, errs)?,
        },
        "secrets" => KindOptions::Secrets {
            categories: categories(f, secrets::SPECS, errs)?,
        },
        "prompt-injection" => {
            let threshold = match f.number("threshold", errs) {
                Some(t) if t > 0.0 => t,
                Some(_) => {
                    errs.push(&f.path("threshold"), "must be greater than 0");
                    return None;
                }
                None if f.has("threshold") => return None,
                None => injection::DEFAULT_THRESHOLD,
            };
            KindOptions::PromptInjection { threshold }
        }
        "regex" => {
            let Some(items) = f.list("patterns", errs) else {
                if !f.has("patterns") {
                    errs.push(&f.path("patterns"), "required field is missing");
                }
                return None;
            };
            if items.is_empty() {
                errs.push(&f.path("patterns"), "needs at least one pattern");
            }
            let mut patterns = Vec::new();
            for (path, item) in items {
                let Some(p) = Fields::new(item, &path, &["name", "pattern"], errs) else {
                    continue;
                };
                let (name, pattern) = (p.req_string("name", errs), p.req_string("pattern", errs));
                if let Some(pattern) = &pattern {
                    if let Err(reason) = check_pattern(pattern) {
                        errs.push(&p.path("pattern"), format!("invalid regex: {reason}"));
                        continue;
                    }
                }
                if let (Some(name), Some(pattern)) = (name, pattern) {
                    if !valid_category(&name) {
                        errs.push(&p.path("name"), "must be letters, digits and _ (it names the finding, e.g. [REDACTED:TICKET_ID])");
                    } else if patterns.iter().any(|q: &UserPattern| q.name == name) {
                        errs.push(&p.path("name"), format!("duplicate pattern name '{name}'"));
                    } else {
                        patterns.push(UserPattern { name, pattern });
                    }
                }
            }
            KindOptions::Regex { patterns }
        }
        "webhook" => {
            let url = f.req_string("url", errs);
            if let Some(u) = &url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    errs.push(&f.path("url"), "must start with http:// or https://");
                }
            }
            let timeout_ms = f.uint("timeout_ms", 1, 300_000, errs);
            if timeout_ms.is_none() && f.has("timeout_ms") {
                return None;
            }
            KindOptions::Webhook {
                url: url?,
                timeout_ms: timeout_ms.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT_MS),
                headers: f.string_map("headers", errs).unwrap_or_default(),
            }
        }
        _ => parse_metadata_options(f, errs)?,
    })
}

fn valid_category(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn categories(
    f: &Fields<'_>,
    specs: &[super::patterns::Spec],
    errs: &mut Errors,
) -> Option<Option<Vec<String>>> {
    let Some(list) = f.string_list("categories", errs) else {
        return if f.has("categories") {
            None
        } else {
            Some(None)
        };
    };
    let mut known: Vec<&str> = specs.iter().map(|s| s.category).collect();
    known.dedup();
    let mut ok = true;
    for (i, c) in list.iter().enumerate() {
        if !known.contains(&c.as_str()) {
            ok = false;
            errs.push(
                &format!("{}[{i}]", f.path("categories")),
                format!("unknown category '{c}' (known: {})", known.join(", ")),
            );
        }
    }
    if list.is_empty() {
        errs.push(
            &f.path("categories"),
            "needs at least one category (omit it for all)",
        );
        ok = false;
    }
    ok.then_some(Some(list))
}

fn parse_metadata_options(f: &Fields<'_>, errs: &mut Errors) -> Option<KindOptions> {
    let required = f.string_list("required", errs).unwrap_or_default();
    let allow_unknown_keys = f.boolean("allow_unknown_keys", errs).unwrap_or(true);
    let mut keys = Vec::new();
    if let Some(v) = f.get("keys") {
        let path = f.path("keys");
        match v {
            Value::Object(map) => {
                for (key, rule) in map {
                    let kpath = format!("{path}.{key}");
                    let Some(r) = Fields::new(rule, &kpath, &["values", "pattern"], errs) else {
                        continue;
                    };
                    let values = r.string_list("values", errs);
                    let pattern = r.string("pattern", errs);
                    let rule = match (values, pattern) {
                        (Some(_), Some(_)) => {
                            errs.push(&kpath, "give either values or pattern, not both");
                            continue;
                        }
                        (Some(v), None) => ValueRule::OneOf(v),
                        (None, Some(p)) => match check_pattern(&p) {
                            Ok(()) => ValueRule::Pattern(p),
                            Err(reason) => {
                                errs.push(&r.path("pattern"), format!("invalid regex: {reason}"));
                                continue;
                            }
                        },
                        (None, None) => ValueRule::Any,
                    };
                    keys.push((key.clone(), rule));
                }
            }
            other => errs.push(
                &path,
                format!(
                    "expected a mapping of key to {{values|pattern}}, got {}",
                    crate::schema::kind(other)
                ),
            ),
        }
    }
    if !allow_unknown_keys && keys.is_empty() && required.is_empty() {
        errs.push(
            &f.path("allow_unknown_keys"),
            "false with no keys listed would refuse any metadata",
        );
    }
    Some(KindOptions::MetadataValidation {
        required,
        keys,
        allow_unknown_keys,
    })
}

fn parse_rule(v: &Value, path: &str, errs: &mut Errors) -> Option<GuardrailRuleConfig> {
    let known = [
        "id",
        "when",
        "llm_input_guardrails",
        "llm_output_guardrails",
        "mcp_tool_pre_invoke_guardrails",
        "mcp_tool_post_invoke_guardrails",
    ];
    let f = Fields::new(v, path, &known, errs)?;
    let id = f.req_string("id", errs);
    let when = f
        .require("when", errs)
        .and_then(|w| When::parse(w, &f.path("when"), errs));
    let input = f
        .string_list("llm_input_guardrails", errs)
        .unwrap_or_default();
    let output = f
        .string_list("llm_output_guardrails", errs)
        .unwrap_or_default();
    let tool_pre = f
        .string_list("mcp_tool_pre_invoke_guardrails", errs)
        .unwrap_or_default();
    let tool_post = f
        .string_list("mcp_tool_post_invoke_guardrails", errs)
        .unwrap_or_default();
    if known[2..].iter().all(|k| !f.has(k)) {
        errs.push(
            path,
            "names no guardrails (llm_input_guardrails, llm_output_guardrails, mcp_tool_pre_invoke_guardrails, mcp_tool_post_invoke_guardrails)",
        );
    }
    Some(GuardrailRuleConfig {
        source: errs.source().to_owned(),
        path: path.to_owned(),
        id: id?,
        when: when?,
        input,
        output,
        tool_pre,
        tool_post,
    })
}
