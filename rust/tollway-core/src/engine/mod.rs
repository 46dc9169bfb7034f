//! The immutable engine compiled from config: one `admit` call per request.
//!
//! Names are interned to ids at compile time and per-key model permissions are precomputed,
//! so admission is a hash, two map lookups and an index; a denial is a value, not an error.

use crate::clock::{Clock, Rng};
use crate::config::{self, KeySecret, Provider, RawConfig, ServerSettings};
use crate::guardrails::GuardrailSet;
use crate::limits::cost::{CostTable, Price};
use crate::limits::reserve::OutputEstimates;
use crate::limits::{Budgets, RateLimiter, DEFAULT_MAX_ENTITIES};
use crate::metadata::Metadata;
use crate::routing::config::RetryConfig;
use crate::routing::{Plan, PlanId, Rule, TargetState};
use crate::schema::{ConfigError, Errors};
use globset::{Glob, GlobSetBuilder};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub mod admission;
mod sync;
mod warnings;

pub use admission::{bearer_token, Admission, AttemptOutcome, Denial, Usage};
use std::collections::HashMap;
use std::sync::Arc;

pub type TargetId = u32;
pub type KeyId = u32;
pub type ModelId = u32;

/// A provider model addressable as `<account>/<model>`.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub account: String,
    pub provider: Provider,
    pub base_url: String,
    pub api_key: Option<String>,
    pub api_version: Option<String>,
    pub headers: Vec<(String, String)>,
    pub model_id: String,
    /// Regions and credentials of cloud providers (Vertex, Bedrock).
    pub cloud: config::CloudAccount,
    /// USD per million tokens, from the account's model entry or the bundled table.
    pub price: Option<Price>,
}

#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub subject: String,
    pub metadata: Metadata,
    pub admin: bool,
    /// Indexed by model id.
    pub(crate) allowed: Vec<bool>,
    /// `allowed_models`, for names no account or rule defines (see [`Engine::any_model_rules`]).
    pub(crate) allowed_globs: globset::GlobSet,
    /// `allowed_tools` globs over `<server>/<tool>`; `None`: no tool.
    pub(crate) tools: Option<globset::GlobSet>,
}

#[derive(Debug)]
pub struct Engine {
    pub settings: ServerSettings,
    pub state: crate::config::StateSettings,
    /// The response cache: `gateway-cache-config` rules and `gateway-settings.cache`.
    pub cache_rules: Vec<crate::cache::CacheRule>,
    pub cache: crate::cache::CacheSettings,
    pub telemetry_json: String,
    pub targets: Vec<Target>,
    /// Every name a client may ask for: targets first (model id == target id), then virtual.
    pub model_names: Vec<String>,
    pub(crate) model_ids: HashMap<String, ModelId>,
    /// Per model id, the routing rules that may apply to it, in config order.
    pub(crate) rules_by_model: Vec<Vec<u32>>,
    /// Rules without `when.models`: they apply to any name, even one nothing else defines.
    pub(crate) any_model_rules: Vec<u32>,
    pub rules: Vec<Rule>,
    /// Plan `i < targets.len()` is the direct plan of target `i`; rule slots follow.
    pub plans: Vec<Plan>,
    pub keys: Vec<Key>,
    pub(crate) key_ids: HashMap<[u8; 32], KeyId>,
    pub(crate) states: Vec<Arc<TargetState>>,
    pub rate_limiter: RateLimiter,
    pub budgets: Budgets,
    pub mcp: crate::mcp::McpConfig,
    /// Per target, the answer length a budget reserves for when `max_tokens` is unset.
    pub output_estimates: OutputEstimates,
    /// Every guardrail scanner, compiled once; requests get ids into it from `admit`.
    pub guardrails: Arc<GuardrailSet>,
    pub clock: Arc<Clock>,
    pub(crate) rng: Rng,
    /// Valid but surely not meant (see `warnings.rs`): printed by `check-config`, logged on load.
    pub warnings: Vec<ConfigError>,
}

impl Engine {
    /// Compiles documents (`[{"source": ..., "doc": {...}}]`) or returns every error found.
    pub fn compile(docs: &Value) -> Result<Self, Vec<ConfigError>> {
        Self::compile_with_clock(docs, Arc::new(Clock::System))
    }

    pub fn compile_with_clock(docs: &Value, clock: Arc<Clock>) -> Result<Self, Vec<ConfigError>> {
        let mut errs = Errors::default();
        let raw = config::parse_documents(docs, &mut errs);
        let engine = Self::build(raw, clock, &mut errs);
        if errs.is_empty() {
            Ok(engine)
        } else {
            Err(errs.list)
        }
    }

    fn build(raw: RawConfig, clock: Arc<Clock>, errs: &mut Errors) -> Self {
        let guardrails = match GuardrailSet::compile(&raw.guardrails) {
            Ok(set) => set,
            Err(list) => {
                errs.list.extend(list);
                GuardrailSet::default()
            }
        };
        let prices = CostTable::bundled();
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
                    api_version: acc.api_version.clone(),
                    headers: acc.headers.clone(),
                    model_id: m.model_id.clone(),
                    cloud: acc.cloud.clone(),
                    price: prices.lookup_for(
                        acc.provider.name(),
                        &m.model_id,
                        m.input_cost_per_million,
                        m.output_cost_per_million,
                    ),
                });
            }
        }
        let mut model_names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
        let mut model_ids: HashMap<String, ModelId> = target_ids.clone();
        let mut plans: Vec<Plan> = (0..targets.len())
            .map(|t| Plan {
                target: t as u32,
                rule: None,
                weight: 100,
                priority: 0,
                // A request for a target by name gets one attempt; rules add retries.
                retry: RetryConfig {
                    attempts: 0,
                    ..RetryConfig::default()
                },
                fallback_status_codes: Vec::new(),
                fallback_candidate: false,
                override_params: None,
            })
            .collect();
        let rules = Self::build_rules(
            &raw,
            &target_ids,
            &mut model_names,
            &mut model_ids,
            &mut plans,
            errs,
        );
        let mut rules_by_model: Vec<Vec<u32>> = vec![Vec::new(); model_names.len()];
        let mut any_model_rules = Vec::new();
        for (r, rule) in rules.iter().enumerate() {
            let r = r as u32;
            let Some(models) = &rule.when.models else {
                any_model_rules.push(r);
                rules_by_model.iter_mut().for_each(|list| list.push(r));
                continue;
            };
            for m in models {
                if let Some(&id) = model_ids.get(m) {
                    if !rules_by_model[id as usize].contains(&r) {
                        rules_by_model[id as usize].push(r);
                    }
                }
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
            let tools = k.allowed_tools.as_ref().map(|patterns| {
                let mut tools = GlobSetBuilder::new();
                for (i, pattern) in patterns.iter().enumerate() {
                    match Glob::new(pattern) {
                        Ok(g) => {
                            tools.add(g);
                        }
                        Err(e) => errs.push(
                            &format!("{}.allowed_tools[{i}]", k.path),
                            format!("invalid glob: {}", e.kind()),
                        ),
                    }
                }
                tools.build().unwrap_or_else(|_| globset::GlobSet::empty())
            });
            keys.push(Key {
                name: k.name.clone(),
                subject: k.subject.clone(),
                metadata: k.metadata.clone(),
                admin: k.admin,
                allowed: model_names.iter().map(|m| set.is_match(m)).collect(),
                allowed_globs: set,
                tools,
            });
        }
        errs.set_source("");
        crate::mcp::check(&raw.mcp, errs);
        let targets_len = targets.len();
        let warnings = warnings::find(
            &raw,
            &warnings::Compiled {
                targets: &targets,
                model_names: &model_names,
                model_ids: &model_ids,
                rules: &rules,
                plans: &plans,
            },
        );
        let states = targets
            .iter()
            .map(|_| Arc::new(TargetState::default()))
            .collect();
        Self {
            settings: raw.server,
            state: raw.state,
            cache_rules: raw.cache.rules,
            cache: raw.cache.settings,
            telemetry_json: raw.telemetry_json,
            targets,
            model_names,
            model_ids,
            rules_by_model,
            any_model_rules,
            rules,
            plans,
            keys,
            key_ids,
            states,
            clock,
            rate_limiter: RateLimiter::new(raw.rate_limits, DEFAULT_MAX_ENTITIES),
            budgets: Budgets::new(raw.budgets, DEFAULT_MAX_ENTITIES),
            mcp: raw.mcp,
            output_estimates: OutputEstimates::new(targets_len),
            guardrails: Arc::new(guardrails),
            rng: Rng::from_time(),
            warnings,
        }
    }

    /// Routing rules: virtual model names are interned, targets resolved, plans appended.
    fn build_rules(
        raw: &RawConfig,
        target_ids: &HashMap<String, TargetId>,
        model_names: &mut Vec<String>,
        model_ids: &mut HashMap<String, ModelId>,
        plans: &mut Vec<Plan>,
        errs: &mut Errors,
    ) -> Vec<Rule> {
        for rule in &raw.lb_rules {
            for m in rule.when.models.iter().flatten() {
                if !model_ids.contains_key(m) {
                    model_ids.insert(m.clone(), model_names.len() as ModelId);
                    model_names.push(m.clone());
                }
            }
        }
        let mut seen_ids: HashMap<&str, &str> = HashMap::new();
        let mut rules = Vec::with_capacity(raw.lb_rules.len());
        for rule in &raw.lb_rules {
            errs.set_source(rule.source.clone());
            if let Some(first) = seen_ids.insert(&rule.id, &rule.path) {
                let msg = format!("duplicate rule id '{}' (first at {first})", rule.id);
                errs.push(&format!("{}.id", rule.path), msg);
            }
            let index = rules.len() as u32;
            let mut rule_plans = Vec::with_capacity(rule.targets.len());
            for t in &rule.targets {
                let Some(&target) = target_ids.get(&t.target) else {
                    let why = if model_ids.contains_key(&t.target) {
                        format!(
                            "'{}' is a virtual model; rules must target real targets",
                            t.target
                        )
                    } else {
                        format!(
                            "unknown target '{}' (a target is <account>/<model>)",
                            t.target
                        )
                    };
                    errs.push(&format!("{}.target", t.path), why);
                    continue;
                };
                rule_plans.push(plans.len() as PlanId);
                plans.push(Plan {
                    target,
                    rule: Some(index),
                    weight: t.weight.unwrap_or(0),
                    priority: t.priority.unwrap_or(rule_plans.len() as u32 - 1),
                    retry: t.retry.clone(),
                    fallback_status_codes: t.fallback_status_codes.clone(),
                    fallback_candidate: t.fallback_candidate,
                    override_params: t.override_params.as_ref().map(ToString::to_string),
                });
            }
            rules.push(Rule {
                id: rule.id.clone(),
                strategy: rule.strategy,
                when: rule.when.clone(),
                plans: rule_plans,
            });
        }
        rules
    }

    /// Takes over live state from the engine being replaced: health and latency of targets
    /// that keep their name, buckets and spend of limit and budget rules that keep their id.
    pub fn adopt_state(&mut self, previous: &Engine) {
        self.rate_limiter.adopt(&previous.rate_limiter);
        self.budgets.adopt(&previous.budgets);
        for (i, t) in self.targets.iter().enumerate() {
            if let Some(j) = previous.targets.iter().position(|p| p.name == t.name) {
                self.states[i] = Arc::clone(&previous.states[j]);
                self.output_estimates
                    .adopt(i as u32, &previous.output_estimates, j as u32);
            }
        }
    }

    /// The model names (targets and virtual models) a key may use, in config order.
    pub fn models_for(&self, key: KeyId) -> impl Iterator<Item = &str> {
        let allowed = &self.keys[key as usize].allowed;
        self.model_names
            .iter()
            .zip(allowed)
            .filter(|(_, ok)| **ok)
            .map(|(m, _)| m.as_str())
    }
}

fn decode_hex(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    out
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
            .admit(Some("Bearer secret-all-1"), "mock/big", None, None)
            .unwrap();
        let t = &e.targets[e.plans[a.plans[0] as usize].target as usize];
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
            e.admit(auth, model, meta, None).err().map(|d| d.status)
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
                None,
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
