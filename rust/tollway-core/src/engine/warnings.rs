//! Config that is valid but surely not meant, found once at compile time: `check-config`
//! prints these and the server logs them at start and on reload, but they never stop a load.
//!
//! - a budget that covers a model with no known price (its requests would cost $0 against it);
//! - a `when.models` entry that names no target or virtual model (a typo never matches);
//! - a first-match rule that an earlier rule shadows (it can never apply);
//! - a guardrail that no rule can reach (only an `X-TFY-GUARDRAILS` header would run it).

use crate::config::RawConfig;
use crate::engine::{ModelId, Target};
use crate::routing::{Plan, Rule};
use crate::schema::ConfigError;
use crate::when::When;
use std::collections::HashMap;

/// What the checks read from the engine being built.
pub(crate) struct Compiled<'a> {
    pub targets: &'a [Target],
    pub model_names: &'a [String],
    pub model_ids: &'a HashMap<String, ModelId>,
    pub rules: &'a [Rule],
    pub plans: &'a [Plan],
}

/// Every warning for `raw`, in document order within each kind.
pub(crate) fn find(raw: &RawConfig, c: &Compiled<'_>) -> Vec<ConfigError> {
    let mut out = Vec::new();
    unknown_models(raw, c, &mut out);
    shadowed_rules(raw, &mut out);
    unpriced_budgets(raw, c, &mut out);
    unreachable_guardrails(raw, &mut out);
    out
}

fn warn(out: &mut Vec<ConfigError>, source: &str, path: String, message: String) {
    out.push(ConfigError {
        source: source.to_owned(),
        path,
        message,
    });
}

/// `(source, path, id, when)` of every rule whose `when.models` names what clients ask for.
fn limit_and_guardrail_rules(raw: &RawConfig) -> Vec<(&str, &str, &str, &When)> {
    let rate = raw
        .rate_limits
        .iter()
        .map(|r| (r.source.as_str(), r.path.as_str(), r.id.as_str(), &r.when));
    let budget = raw
        .budgets
        .iter()
        .map(|r| (r.source.as_str(), r.path.as_str(), r.id.as_str(), &r.when));
    let guard = raw
        .guardrails
        .rules
        .iter()
        .map(|r| (r.source.as_str(), r.path.as_str(), r.id.as_str(), &r.when));
    rate.chain(budget).chain(guard).collect()
}

fn unknown_models(raw: &RawConfig, c: &Compiled<'_>, out: &mut Vec<ConfigError>) {
    for (source, path, _, when) in limit_and_guardrail_rules(raw) {
        for (i, m) in when.models.iter().flatten().enumerate() {
            if c.model_ids.contains_key(m) {
                continue;
            }
            let hint = closest(m, c.model_names)
                .map(|n| format!(" (did you mean '{n}'?)"))
                .unwrap_or_default();
            warn(
                out,
                source,
                format!("{path}.when.models[{i}]"),
                format!("'{m}' is no configured model or virtual model, so it never matches{hint}"),
            );
        }
    }
}

/// A rule that cannot apply because an earlier rule of the same first-match list matches
/// every request it matches. Budgets are left out: cost is charged to every matching one.
fn shadowed_rules(raw: &RawConfig, out: &mut Vec<ConfigError>) {
    let routing: Vec<_> = raw
        .lb_rules
        .iter()
        .map(|r| (r.source.as_str(), r.path.as_str(), r.id.as_str(), &r.when))
        .collect();
    let rate: Vec<_> = raw
        .rate_limits
        .iter()
        .map(|r| (r.source.as_str(), r.path.as_str(), r.id.as_str(), &r.when))
        .collect();
    let guard: Vec<_> = raw
        .guardrails
        .rules
        .iter()
        .map(|r| (r.source.as_str(), r.path.as_str(), r.id.as_str(), &r.when))
        .collect();
    for list in [routing, rate, guard] {
        for (j, (source, path, _, when)) in list.iter().enumerate() {
            let earlier = list[..j].iter().find(|(_, _, _, w)| covers(w, when));
            if let Some((_, _, id, _)) = earlier {
                warn(
                    out,
                    source,
                    (*path).to_owned(),
                    format!(
                        "never applies: rule '{id}' comes first and matches every request \
                         this one matches (the first matching rule wins)"
                    ),
                );
            }
        }
    }
}

/// `a` matches every request `b` matches.
fn covers(a: &When, b: &When) -> bool {
    fn within(a: Option<&Vec<String>>, b: Option<&Vec<String>>) -> bool {
        match (a, b) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => b.iter().all(|x| a.contains(x)),
        }
    }
    within(a.subjects.as_ref(), b.subjects.as_ref())
        && within(a.models.as_ref(), b.models.as_ref())
        && a.metadata.iter().all(|kv| b.metadata.contains(kv))
}

/// Targets a request for `name` may reach: the target itself and every target of a routing
/// rule that can apply to it.
fn reachable(name: &str, c: &Compiled<'_>, into: &mut Vec<u32>) {
    if let Some(&id) = c.model_ids.get(name) {
        if (id as usize) < c.targets.len() && !into.contains(&id) {
            into.push(id);
        }
    }
    for rule in c.rules {
        let applies = rule
            .when
            .models
            .as_ref()
            .is_none_or(|m| m.iter().any(|m| m == name));
        if !applies {
            continue;
        }
        for &p in &rule.plans {
            let t = c.plans[p as usize].target;
            if !into.contains(&t) {
                into.push(t);
            }
        }
    }
}

fn unpriced_budgets(raw: &RawConfig, c: &Compiled<'_>, out: &mut Vec<ConfigError>) {
    for b in &raw.budgets {
        let mut covered = Vec::new();
        match &b.when.models {
            None => covered.extend(0..c.targets.len() as u32),
            Some(models) => models.iter().for_each(|m| reachable(m, c, &mut covered)),
        }
        covered.sort_unstable();
        let unpriced: Vec<&str> = covered
            .iter()
            .map(|&t| &c.targets[t as usize])
            .filter(|t| t.price.is_none())
            .map(|t| t.name.as_str())
            .collect();
        if unpriced.is_empty() {
            continue;
        }
        const SHOWN: usize = 5;
        let mut names = unpriced[..unpriced.len().min(SHOWN)].join(", ");
        if unpriced.len() > SHOWN {
            names.push_str(&format!(" and {} more", unpriced.len() - SHOWN));
        }
        warn(
            out,
            &b.source,
            b.path.clone(),
            format!(
                "budget '{}' covers models with no known price, whose requests cost $0 \
                 against it: {names} (give the model entry input_cost_per_million and \
                 output_cost_per_million)",
                b.id
            ),
        );
    }
}

fn unreachable_guardrails(raw: &RawConfig, out: &mut Vec<ConfigError>) {
    let rules = &raw.guardrails.rules;
    // Rules an earlier one shadows cannot reach their guardrails either.
    let live: Vec<_> = rules
        .iter()
        .enumerate()
        .filter(|(j, r)| !rules[..*j].iter().any(|e| covers(&e.when, &r.when)))
        .map(|(_, r)| r)
        .collect();
    for g in &raw.guardrails.guardrails {
        let listed = live
            .iter()
            .any(|r| r.input.contains(&g.name) || r.output.contains(&g.name));
        if !listed {
            warn(
                out,
                &g.source,
                g.path.clone(),
                format!(
                    "guardrail '{}' is in no rule that can apply, so it runs only for \
                     requests that name it in X-TFY-GUARDRAILS",
                    g.name
                ),
            );
        }
    }
}

/// The configured name nearest to a typo, when one is within two edits.
fn closest<'a>(name: &str, names: &'a [String]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (edit_distance(name, n), n))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use serde_json::{json, Value};

    fn warnings(docs: Vec<Value>) -> Vec<String> {
        let docs: Vec<Value> = docs
            .into_iter()
            .enumerate()
            .map(|(i, d)| json!({"source": format!("w#{}", i + 1), "doc": d}))
            .collect();
        let e = Engine::compile(&Value::Array(docs)).unwrap();
        e.warnings.iter().map(ToString::to_string).collect()
    }

    fn base() -> Vec<Value> {
        vec![
            json!({"type": "provider-account", "name": "oa", "provider": "openai", "api_key": "sk-x",
                   "models": ["gpt-4o-mini", "house-model",
                              {"name": "priced", "model_id": "house-2", "input_cost_per_million": 1.0,
                               "output_cost_per_million": 2.0}]}),
            json!({"type": "gateway-keys", "keys": [{"name": "k", "key": "test-key-123", "subject": "user:a"}]}),
        ]
    }

    #[test]
    fn a_clean_config_has_no_warnings() {
        let mut docs = base();
        docs.push(json!({"type": "gateway-budget-config", "rules": [
            {"id": "b", "when": {"models": ["oa/gpt-4o-mini", "oa/priced"]}, "limit_to": 5, "unit": "cost_per_day"}]}));
        assert_eq!(warnings(docs), Vec::<String>::new());
    }

    #[test]
    fn budgets_over_unpriced_models_are_named() {
        let mut docs = base();
        docs.push(json!({"type": "gateway-load-balancing-config", "rules": [
            {"id": "v", "type": "priority-based-routing", "when": {"models": ["assistant"]},
             "load_balance_targets": [{"target": "oa/priced"}, {"target": "oa/house-model"}]}]}));
        docs.push(json!({"type": "gateway-budget-config", "rules": [
            {"id": "all", "when": {}, "limit_to": 5, "unit": "cost_per_day"},
            {"id": "via-virtual", "when": {"models": ["assistant"]}, "limit_to": 5, "unit": "cost_per_day"},
            {"id": "fine", "when": {"models": ["oa/gpt-4o-mini"]}, "limit_to": 5, "unit": "cost_per_day"}]}));
        assert_eq!(
            warnings(docs),
            [
                "w#4: rules[0]: budget 'all' covers models with no known price, whose requests cost $0 against it: oa/house-model (give the model entry input_cost_per_million and output_cost_per_million)",
                "w#4: rules[1]: budget 'via-virtual' covers models with no known price, whose requests cost $0 against it: oa/house-model (give the model entry input_cost_per_million and output_cost_per_million)",
            ]
        );
    }

    #[test]
    fn model_typos_and_shadowed_rules_are_named() {
        let mut docs = base();
        docs.push(json!({"type": "gateway-rate-limiting-config", "rules": [
            {"id": "typo", "when": {"models": ["oa/gpt-4o-minii", "oa/priced"]}, "limit_to": 5, "unit": "requests_per_minute"},
            {"id": "team", "when": {"metadata": {"team": "a"}}, "limit_to": 5, "unit": "requests_per_minute"},
            {"id": "team-prod", "when": {"metadata": {"team": "a", "env": "prod"}}, "limit_to": 5, "unit": "requests_per_minute"},
            {"id": "other", "when": {"metadata": {"team": "b"}}, "limit_to": 5, "unit": "requests_per_minute"}]}));
        assert_eq!(
            warnings(docs),
            [
                "w#3: rules[0].when.models[0]: 'oa/gpt-4o-minii' is no configured model or virtual model, so it never matches (did you mean 'oa/gpt-4o-mini'?)",
                "w#3: rules[2]: never applies: rule 'team' comes first and matches every request this one matches (the first matching rule wins)",
            ]
        );
    }

    #[test]
    fn guardrails_no_rule_reaches_are_named() {
        let mut docs = base();
        docs.push(json!({"type": "gateway-guardrails-config", "guardrails": [
                {"name": "pii", "kind": "pii"}, {"name": "spare", "kind": "secrets"},
                {"name": "hidden", "kind": "secrets"}],
            "rules": [
                {"id": "all", "when": {}, "llm_input_guardrails": ["pii"]},
                {"id": "late", "when": {"subjects": ["user:a"]}, "llm_output_guardrails": ["hidden"]}]}));
        assert_eq!(
            warnings(docs),
            [
                "w#3: rules[1]: never applies: rule 'all' comes first and matches every request this one matches (the first matching rule wins)",
                "w#3: guardrails[1]: guardrail 'spare' is in no rule that can apply, so it runs only for requests that name it in X-TFY-GUARDRAILS",
                "w#3: guardrails[2]: guardrail 'hidden' is in no rule that can apply, so it runs only for requests that name it in X-TFY-GUARDRAILS",
            ]
        );
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("gpt-4o", "gpt-4o"), 0);
        assert_eq!(edit_distance("gpt-4o", "gpt-4o-mini"), 5);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
    }
}
