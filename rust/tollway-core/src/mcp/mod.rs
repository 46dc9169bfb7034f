//! MCP tool servers: their documents ([`config`]) and the admission of a tool call
//! ([`Engine::admit_tool`](crate::engine::Engine::admit_tool), in `admit`).

mod admit;
pub mod config;

pub use admit::ToolAdmission;
pub use config::{
    check, parse_server, parse_virtual, McpAuth, McpConfig, McpServer, VirtualMcpServer,
};
