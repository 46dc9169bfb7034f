//! Spans of MCP requests and tool calls (`tfy.span_type: MCP`), children of the request's
//! root span. Attribute names follow the OTEL GenAI MCP conventions where they exist
//! (`mcp.method.name`, `mcp.session.id`, `gen_ai.tool.name`, `gen_ai.operation.name:
//! execute_tool`, `error.type`); the span is named `{mcp.method.name} {tool}`.

use super::spans::{Attr, SpanOut, Text, Val};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde::{Deserialize, Serialize};

/// One MCP request, field for field the Python `ToolRun` (array-like).
#[derive(Debug, Deserialize, Serialize)]
pub struct ToolRun {
    pub server: String,
    pub method: String,
    pub tool: String,
    pub start_ns: u64,
    pub end_ns: u64,
    #[serde(default)]
    pub error_type: String,
    #[serde(default)]
    pub session_id: String,
    #[serde(default)]
    pub arguments: Option<String>,
    #[serde(default)]
    pub result: Option<String>,
}

/// The span of one MCP request; `with_content` adds arguments and result (when captured).
pub fn tool_span(
    run: &ToolRun,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: [u8; 8],
    with_content: bool,
) -> SpanOut<'_> {
    let failed = !run.error_type.is_empty();
    let mut attrs = vec![
        Attr::str("tfy.span_type", "MCP"),
        Attr::str("mcp.method.name", &run.method),
        Attr::str("tollway.mcp.server", &run.server),
        Attr::new("tollway.mcp.error", Val::Bool(failed)),
    ];
    if !run.tool.is_empty() {
        attrs.push(Attr::str("gen_ai.tool.name", &run.tool));
        attrs.push(Attr::str("gen_ai.operation.name", "execute_tool"));
    }
    if !run.session_id.is_empty() {
        attrs.push(Attr::str("mcp.session.id", &run.session_id));
    }
    if failed {
        attrs.push(Attr::str("error.type", &run.error_type));
    }
    if with_content {
        if let Some(a) = &run.arguments {
            attrs.push(Attr::str("gen_ai.tool.call.arguments", a));
        }
        if let Some(r) = &run.result {
            attrs.push(Attr::str("gen_ai.tool.call.result", r));
        }
    }
    let name = if run.tool.is_empty() {
        Text::from(run.method.as_str())
    } else {
        Text::spaced(&run.method, &run.tool)
    };
    SpanOut {
        trace_id,
        span_id,
        parent: Some(parent),
        name,
        kind: SpanKind::Client,
        start: run.start_ns,
        end: run.end_ns.max(run.start_ns),
        attrs,
        error: failed.then_some(run.error_type.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_call_span_has_the_mcp_names_and_content_only_when_asked() {
        let run: ToolRun = serde_json::from_str(
            r#"["gh", "tools/call", "search", 1, 2, "rate_limited", "", "{\"q\":1}", null]"#,
        )
        .unwrap();
        let span = tool_span(&run, [1; 16], [2; 8], [3; 8], false).to_proto();
        assert_eq!(span.name, "tools/call search");
        let keys: Vec<&str> = span.attributes.iter().map(|k| k.key.as_str()).collect();
        assert!(keys.contains(&"tfy.span_type") && keys.contains(&"gen_ai.tool.name"));
        assert!(!keys.contains(&"gen_ai.tool.call.arguments"));
        assert!(span.status.is_some());
        let with = tool_span(&run, [1; 16], [2; 8], [3; 8], true).to_proto();
        assert!(with
            .attributes
            .iter()
            .any(|k| k.key == "gen_ai.tool.call.arguments"));
    }
}
