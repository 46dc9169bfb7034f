//! MCP tool servers: `type: mcp-server` and `type: virtual-mcp-server` documents, and the
//! admission of one tool call (the key's `allowed_tools`, then the rate limit), decided like a
//! model call so the same rules, buckets and refusals apply.

use crate::engine::{Denial, Engine, KeyId};
use crate::limits::RequestFacts;
use crate::metadata::{self, Metadata};
use crate::schema::{shorten, Errors, Fields};
use serde_json::{json, Value};

pub const DEFAULT_TOOL_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_BREAKER_FAILURES: u64 = 5;
pub const DEFAULT_BREAKER_COOLDOWN_MS: u64 = 30_000;

/// How the gateway authenticates to an upstream MCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpAuth {
    None,
    /// Static headers (secrets come from `${VAR}`).
    Headers(Vec<(String, String)>),
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
    },
    /// The caller sends its own credentials in `x-tfy-mcp-headers`.
    Passthrough,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServer {
    pub name: String,
    pub url: String,
    pub description: Option<String>,
    pub auth: McpAuth,
    /// Tools the gateway exposes from this server; `None`: all of them.
    pub tools: Option<Vec<String>>,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub breaker_failures: u64,
    pub breaker_cooldown_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualMcpServer {
    pub name: String,
    pub description: Option<String>,
    /// `(server, tool)` pairs, in the order listed.
    pub tools: Vec<(String, String)>,
    pub(crate) source: String,
    pub(crate) path: String,
}

/// Every MCP document of a config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpConfig {
    pub servers: Vec<McpServer>,
    pub virtual_servers: Vec<VirtualMcpServer>,
}

fn check_name(name: &str, path: &str, errs: &mut Errors) -> bool {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        errs.push(
            path,
            "must be 1-64 characters of letters, digits, '-', '_', '.'",
        );
    }
    ok
}

pub fn parse_server(doc: &Value, out: &mut McpConfig, errs: &mut Errors) {
    let known = [
        "type",
        "name",
        "url",
        "description",
        "auth",
        "tools",
        "timeouts",
        "circuit_breaker",
    ];
    let Some(f) = Fields::new(doc, "", &known, errs) else {
        return;
    };
    let name = f
        .req_string("name", errs)
        .filter(|n| check_name(n, "name", errs));
    let url = f.req_string("url", errs).filter(|u| {
        let ok = (u.starts_with("http://") || u.starts_with("https://")) && u.len() > 8;
        if !ok {
            errs.push("url", "must be an http:// or https:// URL");
        }
        ok
    });
    let auth = match f.get("auth") {
        None => Some(McpAuth::None),
        Some(v) => parse_auth(v, errs),
    };
    let tools = f.string_list("tools", errs);
    let mut server = McpServer {
        name: String::new(),
        url: String::new(),
        description: f.string("description", errs),
        auth: McpAuth::None,
        tools,
        connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
        request_timeout_ms: DEFAULT_TOOL_TIMEOUT_MS,
        breaker_failures: DEFAULT_BREAKER_FAILURES,
        breaker_cooldown_ms: DEFAULT_BREAKER_COOLDOWN_MS,
    };
    if let Some(t) = f.get("timeouts") {
        if let Some(t) = Fields::new(t, "timeouts", &["connect_ms", "request_ms"], errs) {
            if let Some(v) = t.uint("connect_ms", 1, 600_000, errs) {
                server.connect_timeout_ms = v;
            }
            if let Some(v) = t.uint("request_ms", 1, 3_600_000, errs) {
                server.request_timeout_ms = v;
            }
        }
    }
    if let Some(b) = f.get("circuit_breaker") {
        let known = ["failure_threshold", "cooldown_ms"];
        if let Some(b) = Fields::new(b, "circuit_breaker", &known, errs) {
            if let Some(v) = b.uint("failure_threshold", 1, 1_000_000, errs) {
                server.breaker_failures = v;
            }
            if let Some(v) = b.uint("cooldown_ms", 1, 86_400_000, errs) {
                server.breaker_cooldown_ms = v;
            }
        }
    }
    let (Some(name), Some(url), Some(auth)) = (name, url, auth) else {
        return;
    };
    if out.servers.iter().any(|s| s.name == name) {
        errs.push("name", format!("duplicate mcp-server '{name}'"));
        return;
    }
    server.name = name;
    server.url = url;
    server.auth = auth;
    out.servers.push(server);
}

fn parse_auth(v: &Value, errs: &mut Errors) -> Option<McpAuth> {
    const KINDS: [&str; 3] = ["headers", "oauth2-client-credentials", "passthrough"];
    let kind = v.get("type").and_then(Value::as_str);
    let known: &[&str] = match kind {
        Some("headers") => &["type", "headers"],
        Some("oauth2-client-credentials") => {
            &["type", "token_url", "client_id", "client_secret", "scope"]
        }
        _ => &["type"],
    };
    let f = Fields::new(v, "auth", known, errs)?;
    f.require("type", errs)?;
    match f.choice("type", &KINDS, errs)?.as_str() {
        "headers" => {
            if !f.has("headers") {
                errs.push("auth.headers", "required field is missing");
            }
            f.string_map("headers", errs).map(McpAuth::Headers)
        }
        "oauth2-client-credentials" => {
            let token_url = f.req_string("token_url", errs);
            if let Some(u) = &token_url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    errs.push("auth.token_url", "must be an http:// or https:// URL");
                }
            }
            Some(McpAuth::OAuth2 {
                token_url: token_url?,
                client_id: f.req_string("client_id", errs)?,
                client_secret: f.req_string("client_secret", errs)?,
                scope: f.string("scope", errs),
            })
        }
        _ => Some(McpAuth::Passthrough),
    }
}

pub fn parse_virtual(doc: &Value, out: &mut McpConfig, errs: &mut Errors) {
    let known = ["type", "name", "description", "tools"];
    let Some(f) = Fields::new(doc, "", &known, errs) else {
        return;
    };
    let name = f
        .req_string("name", errs)
        .filter(|n| check_name(n, "name", errs));
    if !f.has("tools") {
        errs.push("tools", "required field is missing");
    }
    let mut tools = Vec::new();
    for (i, t) in f
        .string_list("tools", errs)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match t.split_once('/') {
            Some((s, tool)) if !s.is_empty() && !tool.is_empty() && !tool.contains('/') => {
                tools.push((s.to_owned(), tool.to_owned()));
            }
            _ => errs.push(
                &format!("tools[{i}]"),
                format!("'{}' is not <server>/<tool>", shorten(t, 100)),
            ),
        }
    }
    let Some(name) = name else {
        return;
    };
    if out.virtual_servers.iter().any(|s| s.name == name) {
        errs.push("name", format!("duplicate virtual-mcp-server '{name}'"));
        return;
    }
    out.virtual_servers.push(VirtualMcpServer {
        name,
        description: f.string("description", errs),
        tools,
        source: errs.source().to_owned(),
        path: String::new(),
    });
}

/// Cross-document checks: a virtual server names known servers, tools the server exposes,
/// and no tool name twice (its clients see bare tool names).
pub fn check(cfg: &McpConfig, errs: &mut Errors) {
    for v in &cfg.virtual_servers {
        errs.set_source(v.source.clone());
        let mut seen: Vec<&str> = Vec::new();
        for (i, (server, tool)) in v.tools.iter().enumerate() {
            let path = format!("{}tools[{i}]", v.path);
            match cfg.servers.iter().find(|s| &s.name == server) {
                None => errs.push(&path, format!("unknown mcp-server '{server}'")),
                Some(s) if s.tools.as_ref().is_some_and(|t| !t.contains(tool)) => errs.push(
                    &path,
                    format!("mcp-server '{server}' does not expose the tool '{tool}'"),
                ),
                Some(_) => {}
            }
            if seen.contains(&tool.as_str()) {
                errs.push(&path, format!("a tool named '{tool}' is listed twice"));
            }
            seen.push(tool);
        }
    }
    errs.set_source("");
}

impl McpConfig {
    /// The servers as JSON for the Python registry (credentials included: it calls them).
    pub fn to_json(&self) -> String {
        let servers: Vec<Value> = self
            .servers
            .iter()
            .map(|s| {
                let auth = match &s.auth {
                    McpAuth::None => json!({"type": "none"}),
                    McpAuth::Headers(h) => json!({"type": "headers",
                        "headers": h.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect::<serde_json::Map<_, _>>()}),
                    McpAuth::OAuth2 {
                        token_url,
                        client_id,
                        client_secret,
                        scope,
                    } => json!({"type": "oauth2-client-credentials", "token_url": token_url,
                        "client_id": client_id, "client_secret": client_secret, "scope": scope}),
                    McpAuth::Passthrough => json!({"type": "passthrough"}),
                };
                json!({"name": s.name, "url": s.url, "description": s.description, "auth": auth,
                    "tools": s.tools, "connect_timeout_ms": s.connect_timeout_ms,
                    "request_timeout_ms": s.request_timeout_ms,
                    "breaker_failures": s.breaker_failures,
                    "breaker_cooldown_ms": s.breaker_cooldown_ms})
            })
            .collect();
        let virtuals: Vec<Value> = self
            .virtual_servers
            .iter()
            .map(|v| {
                let tools: Vec<String> = v.tools.iter().map(|(s, t)| format!("{s}/{t}")).collect();
                json!({"name": v.name, "description": v.description, "tools": tools})
            })
            .collect();
        json!({"servers": servers, "virtual_servers": virtuals}).to_string()
    }
}

/// An admitted tool call: whose, with which metadata, under which rate-limit rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolAdmission {
    pub key: KeyId,
    pub metadata: Metadata,
    pub rate_limit_rule: Option<String>,
}

impl Engine {
    /// Whether a key's `allowed_tools` globs let it call `server/tool` (none: no tool).
    pub fn tool_allowed(&self, key: KeyId, server: &str, tool: &str) -> bool {
        self.keys
            .get(key as usize)
            .and_then(|k| k.tools.as_ref())
            .is_some_and(|set| set.is_match(format!("{server}/{tool}")))
    }

    /// Decides one tool call of an authenticated key: metadata (400), `allowed_tools` (403),
    /// then the first rate-limit rule matching it (429 naming the rule).
    #[allow(clippy::result_large_err)]
    pub fn admit_tool(
        &self,
        key: KeyId,
        server: &str,
        tool: &str,
        metadata_header: Option<&[u8]>,
    ) -> Result<ToolAdmission, Denial> {
        let deny = |status, error_type, code, message: String| Denial {
            status,
            error_type,
            code,
            param: None,
            message,
            headers: Vec::new(),
            rule_id: None,
            key: Some(key),
        };
        let Some(k) = self.keys.get(key as usize) else {
            return Err(deny(
                401,
                "invalid_request_error",
                "invalid_api_key",
                "Invalid API key".into(),
            ));
        };
        let request_meta = match metadata_header {
            Some(raw) => metadata::parse(raw).map_err(|m| Denial {
                param: Some("X-TFY-METADATA"),
                ..deny(400, "invalid_request_error", "invalid_metadata", m)
            })?,
            None => Vec::new(),
        };
        if !self.tool_allowed(key, server, tool) {
            let msg = format!(
                "This key may not call the tool '{}/{}'",
                shorten(server, 64),
                shorten(tool, 100)
            );
            return Err(deny(403, "permission_error", "tool_not_allowed", msg));
        }
        let metadata = metadata::merge(request_meta, &k.metadata);
        let name = format!("{server}/{tool}");
        let facts = RequestFacts {
            subject: &k.subject,
            model: &name,
            metadata: &metadata,
            tool: Some((server, tool)),
        };
        let limit = self.rate_limiter.check(self.clock.now_ms(), &facts);
        let rule = limit.rule.map(|r| self.rate_limiter.rule_id(r).to_owned());
        if !limit.allowed {
            return Err(Denial {
                headers: limit.headers(),
                rule_id: rule,
                ..deny(
                    429,
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    self.rate_limiter.message(&limit),
                )
            });
        }
        Ok(ToolAdmission {
            key,
            metadata,
            rate_limit_rule: rule,
        })
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
                .map(|(i, d)| json!({"source": format!("m.yaml#{}", i + 1), "doc": d}))
                .collect(),
        )
    }

    fn engine() -> Engine {
        Engine::compile(&docs(vec![
            json!({"type": "mcp-server", "name": "gh", "url": "http://127.0.0.1:9/mcp",
                   "auth": {"type": "headers", "headers": {"Authorization": "Bearer x"}}}),
            json!({"type": "mcp-server", "name": "jira", "url": "http://127.0.0.1:9/mcp",
                   "tools": ["create_issue"], "auth": {"type": "passthrough"}}),
            json!({"type": "virtual-mcp-server", "name": "both",
                   "tools": ["gh/search", "jira/create_issue"]}),
            json!({"type": "gateway-keys", "keys": [
                {"name": "a", "key": "secret-aaaa", "subject": "user:a", "allowed_tools": ["gh/*"]},
                {"name": "b", "key": "secret-bbbb", "subject": "user:b"}]}),
            json!({"type": "gateway-rate-limiting-config", "rules": [
                {"id": "gh-search", "when": {"mcp_servers": ["gh/search"]}, "limit_to": 1,
                 "unit": "requests_per_minute", "rate_limit_applies_per": ["user"]},
                {"id": "models", "when": {"models": ["x"]}, "limit_to": 1, "unit": "requests_per_minute"}]}),
        ]))
        .unwrap()
    }

    #[test]
    fn allowed_tools_globs_decide_and_no_list_means_no_tool() {
        let e = engine();
        assert!(e.tool_allowed(0, "gh", "search"));
        assert!(!e.tool_allowed(0, "jira", "create_issue"));
        assert!(!e.tool_allowed(1, "gh", "search"));
        assert_eq!(
            e.admit_tool(1, "gh", "search", None).unwrap_err().status,
            403
        );
    }

    #[test]
    fn a_tool_rate_limit_names_its_rule_and_other_tools_pass() {
        let e = engine();
        let ok = e.admit_tool(0, "gh", "search", None).unwrap();
        assert_eq!(ok.rate_limit_rule.as_deref(), Some("gh-search"));
        let d = e.admit_tool(0, "gh", "search", None).unwrap_err();
        assert_eq!((d.status, d.rule_id.as_deref()), (429, Some("gh-search")));
        let other = e.admit_tool(0, "gh", "list", None).unwrap();
        assert_eq!(
            other.rate_limit_rule, None,
            "a models rule never matches a tool call"
        );
    }

    #[test]
    fn documents_report_unknown_fields_and_bad_references_with_paths() {
        let errs = Engine::compile(&docs(vec![
            json!({"type": "mcp-server", "name": "gh", "url": "ftp://x", "colour": 1,
                   "auth": {"type": "oauth2-client-credentials", "client_id": "c", "secret": "s"}}),
            json!({"type": "mcp-server", "name": "j", "url": "http://h/mcp", "tools": ["a"]}),
            json!({"type": "virtual-mcp-server", "name": "v", "tools": ["nope/x", "j/b", "bad"]}),
        ]))
        .unwrap_err();
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        for want in [
            "m.yaml#1: colour: unknown field",
            "m.yaml#1: url: must be an http",
            "m.yaml#1: auth.secret: unknown field",
            "m.yaml#1: auth.token_url: required field is missing",
            "m.yaml#3: tools[2]: 'bad' is not <server>/<tool>",
            "m.yaml#3: tools[0]: unknown mcp-server 'nope'",
            "m.yaml#3: tools[1]: mcp-server 'j' does not expose the tool 'b'",
        ] {
            assert!(
                shown.iter().any(|s| s.starts_with(want)),
                "missing {want:?} in {shown:#?}"
            );
        }
    }
}
