"""The MCP gateway: `/mcp/<server>` and `/mcp/virtual/<name>` in front of upstream MCP servers
(Streamable HTTP), with the gateway's keys, limits, guardrails and telemetry on every tool
call, and the agent loop that lets `/v1/chat/completions` call those tools (docs/mcp.md)."""

from tollway.mcp.gateway import McpGateway

__all__ = ["McpGateway"]
