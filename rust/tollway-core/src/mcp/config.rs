//! `type: mcp-server` and `type: virtual-mcp-server`: upstream MCP servers and virtual servers
//! made of their tools, read through the schema walker (every problem with its path).

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
