//! The admission of one tool call, decided like a model call so the same rules, buckets and
//! refusals apply: the key's `allowed_tools`, the guardrails rule, then the rate limit.

use crate::engine::{Denial, Engine, KeyId};
use crate::guardrails::GuardrailId;
use crate::metadata::{self, Metadata};
use crate::schema::shorten;
use crate::when::RequestFacts;

/// An admitted tool call: whose, with which metadata, under which rate-limit rule, and the
/// guardrails it runs (ids into the engine's guardrail set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolAdmission {
    pub key: KeyId,
    pub metadata: Metadata,
    pub rate_limit_rule: Option<String>,
    /// On the arguments, and on the result.
    pub tool_pre: Vec<GuardrailId>,
    pub tool_post: Vec<GuardrailId>,
    pub guardrail_rule: Option<String>,
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
    /// guardrails (the first matching rule naming tool guardrails, plus `X-TFY-GUARDRAILS`;
    /// 400 for a bad header), then the first rate-limit rule matching it (429 naming it).
    #[allow(clippy::result_large_err)]
    pub fn admit_tool(
        &self,
        key: KeyId,
        server: &str,
        tool: &str,
        metadata_header: Option<&[u8]>,
        guardrails_header: Option<&[u8]>,
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
        let guardrails = self
            .guardrails
            .select(&facts, guardrails_header)
            .map_err(|m| Denial {
                param: Some("X-TFY-GUARDRAILS"),
                ..deny(400, "invalid_request_error", "invalid_guardrails", m)
            })?;
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
            rate_limit_rule: rule,
            tool_pre: guardrails.tool_pre,
            tool_post: guardrails.tool_post,
            guardrail_rule: guardrails.rule.map(|r| self.guardrails.rules[r].id.clone()),
            metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::Value;

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
            e.admit_tool(1, "gh", "search", None, None)
                .unwrap_err()
                .status,
            403
        );
    }

    #[test]
    fn a_tool_rate_limit_names_its_rule_and_other_tools_pass() {
        let e = engine();
        let ok = e.admit_tool(0, "gh", "search", None, None).unwrap();
        assert_eq!(ok.rate_limit_rule.as_deref(), Some("gh-search"));
        let d = e.admit_tool(0, "gh", "search", None, None).unwrap_err();
        assert_eq!((d.status, d.rule_id.as_deref()), (429, Some("gh-search")));
        let other = e.admit_tool(0, "gh", "list", None, None).unwrap();
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
