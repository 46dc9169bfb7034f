//! `type: gateway-rate-limiting-config` and `type: gateway-budget-config`, read through the
//! config walker so every problem is reported with its path.

use crate::schema::{kind, Errors, Fields};
use crate::when::When;
use serde_json::Value;

/// Metadata keys are at most this long, as in `X-TFY-METADATA`.
const MAX_METADATA_KEY_CHARS: usize = 128;

/// One dimension of an entity key: whose bucket (or budget) a request is counted in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    User,
    Model,
    VirtualAccount,
    Metadata(String),
}

impl KeyPart {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "user" => Ok(Self::User),
            "model" => Ok(Self::Model),
            "virtualaccount" | "virtual-account" => Ok(Self::VirtualAccount),
            _ => match s.strip_prefix("metadata.") {
                Some(k) if !k.is_empty() && k.chars().count() <= MAX_METADATA_KEY_CHARS => {
                    Ok(Self::Metadata(k.to_owned()))
                }
                Some(_) => Err(format!(
                    "'{s}': a metadata key must be 1-{MAX_METADATA_KEY_CHARS} characters"
                )),
                None => Err(format!(
                    "'{s}' is not one of: user, model, virtualaccount, metadata.<key>"
                )),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    Requests,
    Tokens,
}

impl LimitKind {
    /// The suffix of OpenAI's `x-ratelimit-*-{requests|tokens}` headers.
    pub fn header_suffix(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RatePeriod {
    Minute,
    Hour,
    Day,
}

impl RatePeriod {
    pub fn ms(self) -> u64 {
        match self {
            Self::Minute => 60_000,
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }
}

pub const RATE_UNITS: [&str; 6] = [
    "requests_per_minute",
    "requests_per_hour",
    "requests_per_day",
    "tokens_per_minute",
    "tokens_per_hour",
    "tokens_per_day",
];

fn parse_rate_unit(s: &str) -> Option<(LimitKind, RatePeriod)> {
    let (kind, period) = s.split_once("_per_")?;
    let kind = match kind {
        "requests" => LimitKind::Requests,
        "tokens" => LimitKind::Tokens,
        _ => return None,
    };
    let period = match period {
        "minute" => RatePeriod::Minute,
        "hour" => RatePeriod::Hour,
        "day" => RatePeriod::Day,
        _ => return None,
    };
    Some((kind, period))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetPeriod {
    Day,
    Week,
    Month,
}

pub const BUDGET_UNITS: [&str; 3] = ["cost_per_day", "cost_per_week", "cost_per_month"];

fn parse_budget_unit(s: &str) -> Option<BudgetPeriod> {
    match s {
        "cost_per_day" => Some(BudgetPeriod::Day),
        "cost_per_week" => Some(BudgetPeriod::Week),
        "cost_per_month" => Some(BudgetPeriod::Month),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitRule {
    pub source: String,
    pub path: String,
    pub id: String,
    pub when: When,
    pub limit: u64,
    pub kind: LimitKind,
    pub period: RatePeriod,
    /// At most two parts; empty means one bucket shared by every matching request.
    pub applies_per: Vec<KeyPart>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRule {
    pub source: String,
    pub path: String,
    pub id: String,
    pub when: When,
    pub limit_usd: f64,
    pub period: BudgetPeriod,
    /// At most one part; empty means one budget shared by every matching request.
    pub applies_per: Vec<KeyPart>,
    pub audit_mode: bool,
}

/// Reads one `gateway-rate-limiting-config` document; ids must be unique across every
/// document already read into `out`.
pub fn parse_rate_limits(doc: &Value, out: &mut Vec<RateLimitRule>, errs: &mut Errors) {
    let mut seen = Seen(
        out.iter()
            .map(|r| (r.id.clone(), r.source.clone(), r.path.clone()))
            .collect(),
    );
    for (path, item) in rule_items(doc, errs) {
        if let Some(rule) = parse_rate_rule(item, &path, &mut seen, errs) {
            out.push(rule);
        }
    }
}

/// Reads one `gateway-budget-config` document; ids must be unique across every document
/// already read into `out`.
pub fn parse_budgets(doc: &Value, out: &mut Vec<BudgetRule>, errs: &mut Errors) {
    let mut seen = Seen(
        out.iter()
            .map(|r| (r.id.clone(), r.source.clone(), r.path.clone()))
            .collect(),
    );
    for (path, item) in rule_items(doc, errs) {
        if let Some(rule) = parse_budget_rule(item, &path, &mut seen, errs) {
            out.push(rule);
        }
    }
}

fn rule_items<'a>(doc: &'a Value, errs: &mut Errors) -> Vec<(String, &'a Value)> {
    let Some(f) = Fields::new(doc, "", &["type", "name", "rules"], errs) else {
        return Vec::new();
    };
    f.string("name", errs);
    if !f.has("rules") {
        errs.push("rules", "required field is missing");
    }
    f.list("rules", errs).unwrap_or_default()
}

/// Rule ids read so far (id, source, path), including those of rules with other errors.
struct Seen(Vec<(String, String, String)>);

/// The id, unique among the rules read so far.
fn rule_id(f: &Fields<'_>, path: &str, seen: &mut Seen, errs: &mut Errors) -> Option<String> {
    let id = f.req_string("id", errs)?;
    if id.is_empty() {
        errs.push(&f.path("id"), "must not be empty");
        return None;
    }
    if let Some((_, source, first)) = seen.0.iter().find(|(other, _, _)| *other == id) {
        let at = if source == errs.source() || source.is_empty() {
            first.clone()
        } else {
            format!("{source}: {first}")
        };
        errs.push(
            &f.path("id"),
            format!("duplicate rule id '{id}' (first at {at})"),
        );
    } else {
        seen.0
            .push((id.clone(), errs.source().to_owned(), path.to_owned()));
    }
    Some(id)
}

/// `applies_per` as a list of at most `max` distinct parts (or, when `max` is 1, one string).
fn applies_per(f: &Fields<'_>, name: &str, max: usize, errs: &mut Errors) -> Option<Vec<KeyPart>> {
    let path = f.path(name);
    let items: Vec<(String, &Value)> = match f.get(name) {
        None => return Some(Vec::new()),
        Some(v @ Value::String(_)) if max == 1 => vec![(path.clone(), v)],
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{path}[{i}]"), v))
            .collect(),
        Some(v) => {
            let want = if max == 1 {
                "a string or a list of one string"
            } else {
                "a list"
            };
            errs.push(&path, format!("expected {want}, got {}", kind(v)));
            return None;
        }
    };
    if items.len() > max {
        let most = if max == 1 {
            "one key".to_owned()
        } else {
            format!("{max} keys")
        };
        errs.push(&path, format!("at most {most} (got {})", items.len()));
    }
    let mut parts: Vec<KeyPart> = Vec::with_capacity(items.len());
    let mut ok = items.len() <= max;
    for (ipath, v) in items {
        let Some(s) = v.as_str() else {
            errs.push(&ipath, format!("expected a string, got {}", kind(v)));
            ok = false;
            continue;
        };
        match KeyPart::parse(s) {
            Ok(p) if parts.contains(&p) => {
                errs.push(&ipath, format!("'{s}' is listed twice"));
                ok = false;
            }
            Ok(p) => parts.push(p),
            Err(message) => {
                errs.push(&ipath, message);
                ok = false;
            }
        }
    }
    ok.then_some(parts)
}

fn parse_rate_rule(
    v: &Value,
    path: &str,
    seen: &mut Seen,
    errs: &mut Errors,
) -> Option<RateLimitRule> {
    let known = ["id", "when", "limit_to", "unit", "rate_limit_applies_per"];
    let f = Fields::new(v, path, &known, errs)?;
    let id = rule_id(&f, path, seen, errs);
    let when = f
        .require("when", errs)
        .and_then(|w| When::parse(w, &f.path("when"), errs));
    let limit = match f.require("limit_to", errs) {
        Some(_) => f.uint("limit_to", 1, 1_000_000_000_000, errs),
        None => None,
    };
    let unit = match f.require("unit", errs) {
        Some(_) => f
            .choice("unit", &RATE_UNITS, errs)
            .and_then(|u| parse_rate_unit(&u)),
        None => None,
    };
    let applies_per = applies_per(&f, "rate_limit_applies_per", 2, errs);
    let (kind, period) = unit?;
    Some(RateLimitRule {
        source: errs.source().to_owned(),
        path: path.to_owned(),
        id: id?,
        when: when?,
        limit: limit?,
        kind,
        period,
        applies_per: applies_per?,
    })
}

fn parse_budget_rule(
    v: &Value,
    path: &str,
    seen: &mut Seen,
    errs: &mut Errors,
) -> Option<BudgetRule> {
    let known = [
        "id",
        "when",
        "limit_to",
        "unit",
        "budget_applies_per",
        "audit_mode",
    ];
    let f = Fields::new(v, path, &known, errs)?;
    let id = rule_id(&f, path, seen, errs);
    let when = f
        .require("when", errs)
        .and_then(|w| When::parse(w, &f.path("when"), errs));
    let limit_usd = match f.require("limit_to", errs) {
        Some(_) => f.number("limit_to", errs),
        None => None,
    };
    let period = match f.require("unit", errs) {
        Some(_) => f
            .choice("unit", &BUDGET_UNITS, errs)
            .and_then(|u| parse_budget_unit(&u)),
        None => None,
    };
    let applies_per = applies_per(&f, "budget_applies_per", 1, errs);
    let audit_mode = f.boolean("audit_mode", errs).unwrap_or(false);
    Some(BudgetRule {
        source: errs.source().to_owned(),
        path: path.to_owned(),
        id: id?,
        when: when?,
        limit_usd: limit_usd?,
        period: period?,
        applies_per: applies_per?,
        audit_mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shown(errs: &Errors) -> Vec<String> {
        errs.list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_rate_limit_document_is_read_into_rules() {
        let doc = json!({"type": "gateway-rate-limiting-config", "name": "limits", "rules": [
            {"id": "per-project", "when": {"models": ["mock/gpt-4o"]}, "limit_to": 5,
             "unit": "requests_per_minute", "rate_limit_applies_per": ["metadata.project_id", "user"]},
            {"id": "tokens", "when": {}, "limit_to": 1000, "unit": "tokens_per_day"}]});
        let mut errs = Errors::new("l.yaml");
        let mut rules = Vec::new();
        parse_rate_limits(&doc, &mut rules, &mut errs);
        assert!(errs.is_empty(), "{:?}", shown(&errs));
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].applies_per,
            vec![KeyPart::Metadata("project_id".into()), KeyPart::User]
        );
        assert_eq!(
            (rules[0].kind, rules[0].period, rules[0].limit),
            (LimitKind::Requests, RatePeriod::Minute, 5)
        );
        assert_eq!(
            (rules[1].kind, rules[1].period),
            (LimitKind::Tokens, RatePeriod::Day)
        );
        assert!(rules[1].applies_per.is_empty());
        assert_eq!(rules[1].path, "rules[1]");
    }

    #[test]
    fn rate_limit_errors_are_all_reported_with_paths() {
        let doc = json!({"type": "gateway-rate-limiting-config", "rules": [
            {"id": "a", "when": {}, "limit_to": 0, "unit": "requests_per_week"},
            {"id": "a", "when": {}, "limit_to": 5, "unit": "requests_per_minute",
             "rate_limit_applies_per": ["user", "model", "virtualaccount"]},
            {"id": "b", "when": {}, "limit_to": 5, "unit": "tokens_per_hour",
             "rate_limit_applies_per": ["metadata.", "team"], "colour": 1},
            {"id": "c", "when": {}, "limit_to": 5, "unit": "tokens_per_hour",
             "rate_limit_applies_per": ["user", "user"]},
            {"when": {"subjects": ["boss"]}, "unit": 3}]});
        let mut errs = Errors::new("l.yaml");
        let mut rules = Vec::new();
        parse_rate_limits(&doc, &mut rules, &mut errs);
        let shown = shown(&errs);
        let want = [
            "l.yaml: rules[0].limit_to: 0 is out of range",
            "l.yaml: rules[0].unit: 'requests_per_week' is not one of: requests_per_minute",
            "l.yaml: rules[1].id: duplicate rule id 'a' (first at rules[0])",
            "l.yaml: rules[1].rate_limit_applies_per: at most 2 keys (got 3)",
            "l.yaml: rules[2].colour: unknown field",
            "l.yaml: rules[2].rate_limit_applies_per[0]: 'metadata.': a metadata key must be",
            "l.yaml: rules[2].rate_limit_applies_per[1]: 'team' is not one of",
            "l.yaml: rules[3].rate_limit_applies_per[1]: 'user' is listed twice",
            "l.yaml: rules[4].id: required field is missing",
            "l.yaml: rules[4].when.subjects[0]: must be user:<id>",
            "l.yaml: rules[4].limit_to: required field is missing",
            "l.yaml: rules[4].unit: expected a string, got a number",
        ];
        for w in want {
            assert!(
                shown.iter().any(|s| s.starts_with(w)),
                "missing {w:?} in {shown:#?}"
            );
        }
        assert_eq!(shown.len(), want.len(), "{shown:#?}");
        assert!(rules.is_empty(), "no rule with an error is kept");
    }

    #[test]
    fn duplicate_ids_are_found_across_documents() {
        let doc = |unit: &str| {
            json!({"type": "gateway-rate-limiting-config", "rules": [
            {"id": "same", "when": {}, "limit_to": 5, "unit": unit}]})
        };
        let mut rules = Vec::new();
        let mut errs = Errors::new("a.yaml");
        parse_rate_limits(&doc("requests_per_minute"), &mut rules, &mut errs);
        errs.set_source("b.yaml");
        parse_rate_limits(&doc("tokens_per_minute"), &mut rules, &mut errs);
        assert_eq!(
            shown(&errs),
            vec!["b.yaml: rules[0].id: duplicate rule id 'same' (first at a.yaml: rules[0])"]
        );
    }

    #[test]
    fn a_budget_document_is_read_into_rules_with_its_errors() {
        let doc = json!({"type": "gateway-budget-config", "rules": [
            {"id": "team", "when": {"subjects": ["team:a"]}, "limit_to": 12.5, "unit": "cost_per_month",
             "budget_applies_per": "metadata.project", "audit_mode": true},
            {"id": "day", "when": {}, "limit_to": 1, "unit": "cost_per_day", "budget_applies_per": ["user"]},
            {"id": "bad", "when": {}, "limit_to": -1, "unit": "cost_per_year",
             "budget_applies_per": ["user", "model"], "audit_mode": "yes"}]});
        let mut errs = Errors::new("b.yaml");
        let mut rules = Vec::new();
        parse_budgets(&doc, &mut rules, &mut errs);
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].applies_per,
            vec![KeyPart::Metadata("project".into())]
        );
        assert_eq!(
            (rules[0].limit_usd, rules[0].period, rules[0].audit_mode),
            (12.5, BudgetPeriod::Month, true)
        );
        assert_eq!(
            (rules[1].applies_per.clone(), rules[1].audit_mode),
            (vec![KeyPart::User], false)
        );
        let shown = shown(&errs);
        let want = [
            "b.yaml: rules[2].limit_to: expected a non-negative number",
            "b.yaml: rules[2].unit: 'cost_per_year' is not one of: cost_per_day, cost_per_week, cost_per_month",
            "b.yaml: rules[2].budget_applies_per: at most one key (got 2)",
            "b.yaml: rules[2].audit_mode: expected true or false, got a string",
        ];
        for w in want {
            assert!(
                shown.iter().any(|s| s.starts_with(w)),
                "missing {w:?} in {shown:#?}"
            );
        }
        assert_eq!(shown.len(), want.len(), "{shown:#?}");
    }

    #[test]
    fn rules_are_required() {
        let mut errs = Errors::new("");
        parse_budgets(
            &json!({"type": "gateway-budget-config"}),
            &mut Vec::new(),
            &mut errs,
        );
        assert_eq!(shown(&errs), vec!["rules: required field is missing"]);
    }
}
