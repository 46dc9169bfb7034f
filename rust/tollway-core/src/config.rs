//! The config schema: raw JSON documents in, typed and cross-checked config out.
//!
//! Stage one reads each document by its `type` through [`Fields`] (all errors, with paths);
//! stage two ([`crate::engine::Engine::compile`]) resolves names across documents. New
//! document types are one more arm in [`parse_document`].

use crate::schema::{index, Errors, Fields};
use serde_json::Value;

pub use crate::server::{
    ServerSettings, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_RESPONSE_BYTES,
};
pub const METADATA_VALUE_MAX_CHARS: usize = 128;

pub use crate::providers::{CloudAccount, Provider};

#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    pub name: String,
    pub model_id: String,
    pub input_cost_per_million: Option<f64>,
    pub output_cost_per_million: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderAccount {
    pub path: String,
    pub name: String,
    pub provider: Provider,
    pub base_url: String,
    pub api_key: Option<String>,
    /// Azure OpenAI's `api-version` query parameter.
    pub api_version: Option<String>,
    pub headers: Vec<(String, String)>,
    pub models: Vec<ModelEntry>,
    /// Regions and credentials of cloud providers (Vertex, Bedrock).
    pub cloud: CloudAccount,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySecret {
    /// Lower-case hex of the key's SHA-256.
    Sha256(String),
    Plain(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfig {
    pub source: String,
    pub path: String,
    pub name: String,
    pub secret: KeySecret,
    pub subject: String,
    pub allowed_models: Vec<String>,
    /// `<server>/<tool>` globs; `None`: the key may call no tool.
    pub allowed_tools: Option<Vec<String>>,
    pub metadata: Vec<(String, String)>,
    /// May read the analytics API and `/ui`.
    pub admin: bool,
}

pub use crate::limits::sync::StateSettings;

/// Everything the documents said, before names are resolved across documents.
#[derive(Debug, Default, Clone)]
pub struct RawConfig {
    pub server: ServerSettings,
    pub accounts: Vec<ProviderAccount>,
    pub keys: Vec<KeyConfig>,
    pub lb_rules: Vec<crate::routing::config::LbRule>,
    pub rate_limits: Vec<crate::limits::RateLimitRule>,
    pub budgets: Vec<crate::limits::BudgetRule>,
    pub guardrails: crate::guardrails::GuardrailsConfig,
    pub mcp: crate::mcp::McpConfig,
    pub state: StateSettings,
    pub cache: crate::cache::CacheConfig,
    /// `{"otel", "metrics", "request_logs", "alerts"}` as validated, for the Python side.
    pub telemetry_json: String,
    pub logs: crate::logs::LogsConfig,
}

pub const DOCUMENT_TYPES: [&str; 11] = [
    "gateway-settings",
    "provider-account",
    "gateway-keys",
    "gateway-load-balancing-config",
    "gateway-rate-limiting-config",
    "gateway-budget-config",
    "gateway-guardrails-config",
    "gateway-cache-config",
    "gateway-alerts-config",
    "mcp-server",
    "virtual-mcp-server",
];

/// Reads one document into `cfg`, recording every problem in `errs`.
pub fn parse_document(
    doc: &Value,
    cfg: &mut RawConfig,
    seen_settings: &mut bool,
    errs: &mut Errors,
) {
    let Some(ty) = doc.get("type") else {
        match doc {
            Value::Object(_) => errs.push("type", "required field is missing"),
            other => errs.push(
                "",
                format!(
                    "a document must be a mapping, got {}",
                    crate::schema::kind(other)
                ),
            ),
        }
        return;
    };
    let Some(ty) = ty.as_str() else {
        errs.push("type", "expected a string");
        return;
    };
    match ty {
        "gateway-settings" => {
            if std::mem::replace(seen_settings, true) {
                errs.push("type", "gateway-settings may appear only once");
            }
            parse_settings(doc, cfg, errs);
        }
        "provider-account" => {
            if let Some(acc) = parse_account(doc, errs) {
                cfg.accounts.push(acc);
            }
        }
        "gateway-keys" => parse_keys(doc, cfg, errs),
        "gateway-load-balancing-config" => {
            crate::routing::config::parse(doc, &mut cfg.lb_rules, errs)
        }
        "gateway-rate-limiting-config" => {
            crate::limits::parse_rate_limits(doc, &mut cfg.rate_limits, errs);
        }
        "gateway-budget-config" => crate::limits::parse_budgets(doc, &mut cfg.budgets, errs),
        "gateway-guardrails-config" => crate::guardrails::parse(doc, &mut cfg.guardrails, errs),
        "gateway-cache-config" => crate::cache::parse_rules(doc, &mut cfg.cache.rules, errs),
        "gateway-alerts-config" => crate::logs::config::parse_alerts(doc, &mut cfg.logs, errs),
        "mcp-server" => crate::mcp::parse_server(doc, &mut cfg.mcp, errs),
        "virtual-mcp-server" => crate::mcp::parse_virtual(doc, &mut cfg.mcp, errs),
        other => errs.push(
            "type",
            format!(
                "unknown document type '{other}' (known: {})",
                DOCUMENT_TYPES.join(", ")
            ),
        ),
    }
}

fn parse_settings(doc: &Value, cfg: &mut RawConfig, errs: &mut Errors) {
    let known = [
        "type",
        "server",
        "otel",
        "metrics",
        "state",
        "request_logs",
        "cache",
    ];
    let Some(f) = Fields::new(doc, "", &known, errs) else {
        return;
    };
    // Telemetry is configured in Python (exporter, metrics); the schema is checked here and
    // the validated sections are handed over as JSON.
    let mut telemetry = serde_json::Map::new();
    for (name, ok) in [
        (
            "otel",
            f.get("otel")
                .map(|v| crate::telemetry::config::parse_otel(v, "otel", errs).is_some()),
        ),
        (
            "metrics",
            f.get("metrics")
                .map(|v| crate::telemetry::config::parse_metrics(v, "metrics", errs).is_some()),
        ),
        (
            "request_logs",
            f.get("request_logs").map(|v| {
                crate::logs::config::parse_request_logs(v, "request_logs", errs).is_some()
            }),
        ),
    ] {
        if ok == Some(true) {
            telemetry.insert(name.to_owned(), f.get(name).cloned().unwrap_or(Value::Null));
        }
    }
    cfg.telemetry_json = Value::Object(telemetry).to_string();
    if let Some(state) = f.get("state") {
        crate::limits::sync::parse_state(state, &mut cfg.state, errs);
    }
    if let Some(cache) = f.get("cache") {
        crate::cache::parse_settings(cache, &mut cfg.cache.settings, errs);
    }
    if let Some(server) = f.get("server") {
        crate::server::parse(server, &mut cfg.server, errs);
    }
}

/// Names that become part of a target (`account/model`) must not contain the separator.
fn check_name(name: &str, path: &str, errs: &mut Errors) -> bool {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !ok {
        errs.push(
            path,
            "must be 1-128 characters of letters, digits, '-', '_', '.', ':'",
        );
    }
    ok
}

fn parse_account(doc: &Value, errs: &mut Errors) -> Option<ProviderAccount> {
    let known = [
        "type",
        "name",
        "provider",
        "base_url",
        "api_key",
        "api_version",
        "headers",
        "models",
    ];
    let known: Vec<&str> = known
        .into_iter()
        .chain(crate::providers::CLOUD_FIELDS)
        .collect();
    let f = Fields::new(doc, "", &known, errs)?;
    let name = f.req_string("name", errs);
    let name = name.filter(|n| check_name(n, "name", errs));
    let provider = if f.require("provider", errs).is_some() {
        f.choice("provider", &Provider::NAMES, errs)
            .and_then(|p| Provider::parse(&p))
    } else {
        None
    };
    let base_url = match (f.string("base_url", errs), provider) {
        (Some(url), _) => {
            let ok = (url.starts_with("http://") || url.starts_with("https://")) && url.len() > 8;
            if !ok {
                errs.push("base_url", "must be an http:// or https:// URL");
            }
            Some(url.trim_end_matches('/').to_owned())
        }
        (None, Some(p)) => match p.default_base_url() {
            Some(url) => Some(url.to_owned()),
            None => {
                errs.push("base_url", format!("required for provider {}", p.name()));
                None
            }
        },
        (None, None) => None,
    };
    let api_key = f.string("api_key", errs);
    if let Some(p) = provider.filter(|p| p.needs_api_key()) {
        if api_key.is_none() {
            errs.push("api_key", format!("required for provider {}", p.name()));
        }
    }
    let api_version = f.string("api_version", errs);
    let cloud = crate::providers::parse_cloud(&f, provider, errs);
    let headers = f.string_map("headers", errs).unwrap_or_default();
    let mut models: Vec<ModelEntry> = Vec::new();
    for (path, item) in f.list("models", errs).unwrap_or_default() {
        let Some(entry) = parse_model(item, &path, errs) else {
            continue;
        };
        if models.iter().any(|m| m.name == entry.name) {
            errs.push(&path, format!("duplicate model name '{}'", entry.name));
        } else {
            models.push(entry);
        }
    }
    if !f.has("models") {
        errs.push("models", "required field is missing");
    }
    Some(ProviderAccount {
        path: String::new(),
        name: name?,
        provider: provider?,
        base_url: base_url?,
        api_key,
        api_version,
        headers,
        models,
        cloud,
    })
}

fn parse_model(item: &Value, path: &str, errs: &mut Errors) -> Option<ModelEntry> {
    if let Value::String(name) = item {
        check_name(name, path, errs).then_some(())?;
        return Some(ModelEntry {
            name: name.clone(),
            model_id: name.clone(),
            input_cost_per_million: None,
            output_cost_per_million: None,
        });
    }
    let known = [
        "name",
        "model_id",
        "input_cost_per_million",
        "output_cost_per_million",
    ];
    let f = Fields::new(item, path, &known, errs)?;
    let name = f.req_string("name", errs)?;
    check_name(&name, &f.path("name"), errs).then_some(())?;
    Some(ModelEntry {
        model_id: f.string("model_id", errs).unwrap_or_else(|| name.clone()),
        name,
        input_cost_per_million: f.number("input_cost_per_million", errs),
        output_cost_per_million: f.number("output_cost_per_million", errs),
    })
}

fn parse_keys(doc: &Value, cfg: &mut RawConfig, errs: &mut Errors) {
    let Some(f) = Fields::new(doc, "", &["type", "keys"], errs) else {
        return;
    };
    if !f.has("keys") {
        errs.push("keys", "required field is missing");
    }
    for (path, item) in f.list("keys", errs).unwrap_or_default() {
        if let Some(k) = parse_key(item, &path, errs) {
            cfg.keys.push(k);
        }
    }
}

fn parse_key(item: &Value, path: &str, errs: &mut Errors) -> Option<KeyConfig> {
    let known = [
        "name",
        "key_sha256",
        "key",
        "subject",
        "allowed_models",
        "allowed_tools",
        "metadata",
        "admin",
    ];
    let f = Fields::new(item, path, &known, errs)?;
    let name = f.req_string("name", errs);
    let secret = match (f.string("key_sha256", errs), f.string("key", errs)) {
        (Some(h), None) => {
            crate::schema::parse_sha256(&h, &f.path("key_sha256"), errs).map(KeySecret::Sha256)
        }
        (None, Some(k)) if k.len() >= 8 => Some(KeySecret::Plain(k)),
        (None, Some(_)) => {
            errs.push(&f.path("key"), "a key must be at least 8 characters");
            None
        }
        (Some(_), Some(_)) => {
            errs.push(path, "give either key_sha256 or key, not both");
            None
        }
        (None, None) => {
            errs.push(path, "one of key_sha256 or key is required");
            None
        }
    };
    let subject = f.req_string("subject", errs).filter(|s| {
        let ok = ["user:", "team:", "virtualaccount:"]
            .iter()
            .any(|p| s.strip_prefix(p).is_some_and(|id| !id.is_empty()));
        if !ok {
            errs.push(
                &f.path("subject"),
                "must be user:<id>, team:<id> or virtualaccount:<id>",
            );
        }
        ok
    });
    let allowed_models = f
        .string_list("allowed_models", errs)
        .unwrap_or_else(|| vec!["*".into()]);
    let allowed_tools = f.string_list("allowed_tools", errs);
    let metadata = f.string_map("metadata", errs).unwrap_or_default();
    for (k, v) in &metadata {
        if v.chars().count() > METADATA_VALUE_MAX_CHARS {
            errs.push(
                &format!("{path}.metadata.{k}"),
                "values are at most 128 characters",
            );
        }
    }
    Some(KeyConfig {
        source: errs.source().to_owned(),
        path: path.to_owned(),
        name: name?,
        secret: secret?,
        subject: subject?,
        allowed_models,
        allowed_tools,
        metadata,
        admin: f.boolean("admin", errs).unwrap_or(false),
    })
}

/// Reads every document; `docs` items are `{"source": "...", "doc": {...}}`.
pub fn parse_documents(docs: &Value, errs: &mut Errors) -> RawConfig {
    let mut cfg = RawConfig {
        // Valid JSON even without a gateway-settings document.
        telemetry_json: "{}".to_owned(),
        ..RawConfig::default()
    };
    let mut seen_settings = false;
    let Some(items) = docs.as_array() else {
        errs.push("", "expected a list of documents");
        return cfg;
    };
    for (i, item) in items.iter().enumerate() {
        let source = item.get("source").and_then(Value::as_str).unwrap_or("");
        let source = if source.is_empty() {
            index("document", i)
        } else {
            source.to_owned()
        };
        errs.set_source(source);
        let doc = item.get("doc").unwrap_or(&Value::Null);
        let before = cfg.accounts.len();
        parse_document(doc, &mut cfg, &mut seen_settings, errs);
        for acc in &mut cfg.accounts[before..] {
            acc.path = errs.source().to_owned();
        }
    }
    errs.set_source("");
    let budgets: Vec<&str> = cfg.budgets.iter().map(|b| b.id.as_str()).collect();
    let limits: Vec<&str> = cfg.rate_limits.iter().map(|r| r.id.as_str()).collect();
    let json = &mut cfg.telemetry_json;
    crate::logs::config::finish(&mut cfg.logs, &budgets, &limits, json, errs);
    cfg
}
