//! Spans of MCP requests and tool calls (`tfy.span_type: MCP`), children of the request's
//! root span. Attribute names follow the OTEL GenAI MCP conventions where they exist
//! (`mcp.method.name`, `mcp.session.id`, `gen_ai.tool.name`, `gen_ai.operation.name:
//! execute_tool`, `error.type`); the span is named `{mcp.method.name} {tool}`.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};
use serde::Deserialize;

/// One MCP request, field for field the Python `ToolRun` (array-like).
#[derive(Debug, Deserialize)]
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

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.to_owned()))
}

/// The span of one MCP request; `with_content` adds arguments and result (when captured).
pub fn tool_span(
    run: &ToolRun,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    with_content: bool,
) -> Span {
    let mut attrs = vec![
        text("tfy.span_type", "MCP"),
        text("mcp.method.name", &run.method),
        text("tollway.mcp.server", &run.server),
        kv(
            "tollway.mcp.error",
            any_value::Value::BoolValue(!run.error_type.is_empty()),
        ),
    ];
    if !run.tool.is_empty() {
        attrs.push(text("gen_ai.tool.name", &run.tool));
        attrs.push(text("gen_ai.operation.name", "execute_tool"));
    }
    if !run.session_id.is_empty() {
        attrs.push(text("mcp.session.id", &run.session_id));
    }
    if !run.error_type.is_empty() {
        attrs.push(text("error.type", &run.error_type));
    }
    if with_content {
        if let Some(a) = &run.arguments {
            attrs.push(text("gen_ai.tool.call.arguments", a));
        }
        if let Some(r) = &run.result {
            attrs.push(text("gen_ai.tool.call.result", r));
        }
    }
    let name = if run.tool.is_empty() {
        run.method.clone()
    } else {
        format!("{} {}", run.method, run.tool)
    };
    Span {
        trace_id,
        span_id,
        parent_span_id: parent,
        name,
        kind: SpanKind::Client as i32,
        start_time_unix_nano: run.start_ns,
        end_time_unix_nano: run.end_ns.max(run.start_ns),
        attributes: attrs,
        status: (!run.error_type.is_empty()).then(|| Status {
            message: run.error_type.clone(),
            code: StatusCode::Error as i32,
        }),
        ..Default::default()
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
        let span = tool_span(&run, vec![1; 16], vec![2; 8], vec![3; 8], false);
        assert_eq!(span.name, "tools/call search");
        let keys: Vec<&str> = span.attributes.iter().map(|k| k.key.as_str()).collect();
        assert!(keys.contains(&"tfy.span_type") && keys.contains(&"gen_ai.tool.name"));
        assert!(!keys.contains(&"gen_ai.tool.call.arguments"));
        assert!(span.status.is_some());
        let with = tool_span(&run, vec![1; 16], vec![2; 8], vec![3; 8], true);
        assert!(with
            .attributes
            .iter()
            .any(|k| k.key == "gen_ai.tool.call.arguments"));
    }
}
