"""The MCP servers of one config, as the engine validated them (`mcp-server`,
`virtual-mcp-server` documents), in the shape the request path uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from tollway.engine import Engine, mcp_config_json

__all__ = ["Registry", "ServerSpec", "Target"]


@dataclass(frozen=True, slots=True)
class ServerSpec:
    name: str
    url: str
    description: str | None
    # {"type": "none" | "headers" | "oauth2-client-credentials" | "passthrough", ...}
    auth: dict[str, Any]
    # The tools the gateway exposes from this server; None: all.
    tools: frozenset[str] | None
    connect_timeout_s: float
    request_timeout_s: float
    breaker_failures: int
    breaker_cooldown_s: float

    def exposes(self, tool: str) -> bool:
        return self.tools is None or tool in self.tools


@dataclass(frozen=True, slots=True)
class Target:
    """What a client's endpoint names: one server, or a virtual server's `(server, tool)`s."""

    name: str
    servers: tuple[ServerSpec, ...]
    # Virtual only: the exposed tool name -> (server, upstream tool name).
    tools: dict[str, tuple[str, str]] | None = None

    @property
    def virtual(self) -> bool:
        return self.tools is not None


@dataclass(frozen=True, slots=True)
class Registry:
    servers: dict[str, ServerSpec]
    virtual: dict[str, Target]

    @classmethod
    def from_engine(cls, engine: Engine) -> Registry:
        raw = msgspec.json.decode(mcp_config_json(engine))
        servers = {
            s["name"]: ServerSpec(
                name=s["name"],
                url=s["url"],
                description=s.get("description"),
                auth=s["auth"],
                tools=frozenset(s["tools"]) if s.get("tools") is not None else None,
                connect_timeout_s=s["connect_timeout_ms"] / 1000,
                request_timeout_s=s["request_timeout_ms"] / 1000,
                breaker_failures=s["breaker_failures"],
                breaker_cooldown_s=s["breaker_cooldown_ms"] / 1000,
            )
            for s in raw["servers"]
        }
        virtual = {}
        for v in raw["virtual_servers"]:
            tools = {}
            for entry in v["tools"]:
                server, tool = entry.split("/", 1)
                tools[tool] = (server, tool)
            used = tuple(servers[s] for s in dict.fromkeys(s for s, _ in tools.values()))
            virtual[v["name"]] = Target(v["name"], used, tools)
        return cls(servers, virtual)

    def target(self, path: str) -> Target | None:
        """The target of `/mcp/<server>` or `/mcp/virtual/<name>` (path after `/mcp/`)."""
        if path.startswith("virtual/"):
            return self.virtual.get(path.removeprefix("virtual/"))
        spec = self.servers.get(path)
        return Target(spec.name, (spec,)) if spec is not None else None
