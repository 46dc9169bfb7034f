"""The gateway as an MCP client of the upstream servers: JSON-RPC over Streamable HTTP with
aiohttp (one pooled session per worker), an MCP session per server and credentials, the
server's auth (static headers, OAuth2 client credentials with a cached token, or the
caller's own headers), and a circuit breaker per server.

Measured against the official SDK's client (docs/performance.md): a `tools/call` over one
kept session costs a fraction of the SDK's per-call task-group and httpx machinery, and this
is on the request path, so the SDK is used only by the tests (as client and as servers).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from tollway.mcp.registry import ServerSpec

__all__ = ["PROTOCOL_VERSION", "Breaker", "RpcError", "Unavailable", "Upstreams"]

PROTOCOL_VERSION = "2025-06-18"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_MAX_ANSWER = 16 * 1024 * 1024
_MAX_SESSIONS = 1024
# Headers a caller may not set on an upstream call through `x-tfy-mcp-headers`.
_RESERVED = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "accept",
        "mcp-session-id",
        "x-tfy-user",
        "mcp-protocol-version",
        "transfer-encoding",
        "connection",
    }
)


class RpcError(Exception):
    """A JSON-RPC error answered by the upstream server (passed on to the client)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class Unavailable(Exception):
    """The server could not be used: `connect`, `timeout`, `status <n>`, `auth`,
    `invalid answer`, or `circuit open`; never with upstream text (it may echo secrets)."""

    def __init__(self, server: str, reason: str, healthy: bool = False) -> None:
        super().__init__(f"MCP server '{server}' is unavailable ({reason})")
        self.server, self.reason = server, reason
        # A refusal of the caller's own credentials says nothing about the server's health
        # (one caller with a bad token must not open the breaker for everyone).
        self.healthy = healthy


@dataclass(slots=True)
class Breaker:
    """Passive health of one server: `failures` consecutive failures open it for `cooldown_s`,
    then one call is let through (half-open) and its outcome closes or reopens it."""

    failures: int = 0
    open_until: float = 0.0
    probing: bool = False
    opened: int = 0  # times it opened, for /metrics

    def allow(self, now: float) -> bool:
        if self.open_until == 0.0:
            return True
        if now < self.open_until or self.probing:
            return False
        self.probing = True
        return True

    def record(self, ok: bool, now: float, spec: ServerSpec) -> bool:
        """Returns True when this outcome opened the breaker."""
        self.probing = False
        if ok:
            self.failures, self.open_until = 0, 0.0
            return False
        self.failures += 1
        if self.failures >= spec.breaker_failures or self.open_until:
            self.open_until = now + spec.breaker_cooldown_s
            self.opened += 1
            return True
        return False


@dataclass(slots=True)
class _Session:
    id: str | None = None
    protocol: str = PROTOCOL_VERSION
    capabilities: dict[str, Any] = field(default_factory=dict)
    ready: asyncio.Lock = field(default_factory=asyncio.Lock)
    initialized: bool = False


@dataclass(slots=True)
class _Token:
    value: str = ""
    expires_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Upstreams:
    """Every upstream MCP server of this worker; state survives config reloads by name."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.http = session
        self.sessions: dict[tuple[str, str, str], _Session] = {}
        self.tokens: dict[tuple[str, str, str], _Token] = {}
        self.breakers: dict[str, Breaker] = {}
        self._ids = 0

    def breaker(self, server: str) -> Breaker:
        b = self.breakers.get(server)
        if b is None:
            b = self.breakers[server] = Breaker()
        return b

    async def call(
        self,
        spec: ServerSpec,
        method: str,
        params: dict[str, Any] | None,
        subject: str,
        passthrough: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The `result` of one request to `spec`, through its session (made on first use)."""
        breaker = self.breaker(spec.name)
        if not breaker.allow(time.monotonic()):
            raise Unavailable(spec.name, "circuit open")
        try:
            headers = await self._auth(spec, passthrough)
            creds = hashlib.sha256(_encode(sorted(headers.items()))).hexdigest()
            headers["x-tfy-user"] = subject
            key = (spec.name, spec.url, creds)
            session = self.sessions.get(key)
            if session is None:
                if len(self.sessions) >= _MAX_SESSIONS:
                    # Passthrough callers each have their own: the oldest one goes.
                    del self.sessions[next(iter(self.sessions))]
                session = self.sessions[key] = _Session()
            for attempt in (0, 1):
                await self._initialize(spec, session, headers)
                try:
                    result = await self._rpc(spec, session, headers, method, params)
                    break
                except _SessionGone:
                    # The server forgot the session (restart): one new session, then again.
                    session.initialized = False
                    if attempt:
                        raise Unavailable(spec.name, "session lost") from None
        except Unavailable as e:
            breaker.record(e.healthy, time.monotonic(), spec)
            raise
        except RpcError:
            breaker.record(True, time.monotonic(), spec)  # it answered: it is up
            raise
        except BaseException:
            breaker.probing = False  # cancelled: neither outcome
            raise
        breaker.record(True, time.monotonic(), spec)
        return result

    def capabilities(self, spec: ServerSpec) -> dict[str, Any]:
        for (name, _, _), s in self.sessions.items():
            if name == spec.name and s.initialized:
                return s.capabilities
        return {}

    async def _initialize(
        self, spec: ServerSpec, session: _Session, headers: dict[str, str]
    ) -> None:
        if session.initialized:
            return
        async with session.ready:
            if session.initialized:
                return
            session.id = None
            params = {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "tollway", "version": "0.1"},
            }
            result = await self._rpc(spec, session, headers, "initialize", params)
            session.protocol = str(result.get("protocolVersion") or PROTOCOL_VERSION)
            caps = result.get("capabilities")
            session.capabilities = caps if isinstance(caps, dict) else {}
            await self._rpc(spec, session, headers, "notifications/initialized", None)
            session.initialized = True

    async def _rpc(
        self,
        spec: ServerSpec,
        session: _Session,
        auth: dict[str, str],
        method: str,
        params: dict[str, Any] | None,
    ) -> dict[str, Any]:
        notification = method.startswith("notifications/")
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        if not notification:
            self._ids += 1
            msg["id"] = self._ids
        headers = {
            **auth,
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": session.protocol,
        }
        if session.id is not None:
            headers["mcp-session-id"] = session.id
        timeout = aiohttp.ClientTimeout(
            total=spec.request_timeout_s, sock_connect=spec.connect_timeout_s
        )
        try:
            async with self.http.post(
                spec.url, data=_encode(msg), headers=headers, timeout=timeout
            ) as resp:
                if resp.status == 404 and session.id is not None:
                    raise _SessionGone
                _check_status(spec, resp.status)
                sid = resp.headers.get("mcp-session-id")
                if sid and method == "initialize":
                    session.id = sid
                if notification or resp.status == 202:
                    return {}
                ctype = resp.headers.get("content-type", "")
                if ctype.startswith("text/event-stream"):
                    answer = await _from_sse(resp, msg["id"])
                else:
                    answer = _decode(await resp.content.read(_MAX_ANSWER))
        except TimeoutError:
            raise Unavailable(spec.name, "timeout") from None
        except aiohttp.ClientConnectorError:
            raise Unavailable(spec.name, "connect") from None
        except aiohttp.ClientError:
            raise Unavailable(spec.name, "connection broken") from None
        except msgspec.DecodeError:
            raise Unavailable(spec.name, "invalid answer") from None
        return _result(spec, answer)

    async def _auth(self, spec: ServerSpec, passthrough: dict[str, str] | None) -> dict[str, str]:
        auth = spec.auth
        kind = auth.get("type")
        if kind == "headers":
            return dict(auth.get("headers") or {})
        if kind == "passthrough":
            return {k: v for k, v in (passthrough or {}).items() if k.lower() not in _RESERVED}
        if kind == "oauth2-client-credentials":
            return {"authorization": f"Bearer {await self._token(spec)}"}
        return {}

    async def _token(self, spec: ServerSpec) -> str:
        """A cached client-credentials token, fetched again shortly before it expires."""
        auth = spec.auth
        key = (auth["token_url"], auth["client_id"], auth.get("scope") or "")
        tok = self.tokens.get(key)
        if tok is None:
            tok = self.tokens[key] = _Token()
        if tok.value and time.monotonic() < tok.expires_at:
            return tok.value
        async with tok.lock:
            if tok.value and time.monotonic() < tok.expires_at:
                return tok.value
            form = {
                "grant_type": "client_credentials",
                "client_id": auth["client_id"],
                "client_secret": auth["client_secret"],
            }
            if auth.get("scope"):
                form["scope"] = auth["scope"]
            timeout = aiohttp.ClientTimeout(total=spec.request_timeout_s)
            try:
                async with self.http.post(auth["token_url"], data=form, timeout=timeout) as r:
                    if r.status != 200:
                        raise Unavailable(spec.name, f"token endpoint status {r.status}")
                    body = _decode(await r.content.read(1 << 20))
            except (TimeoutError, aiohttp.ClientError, msgspec.DecodeError):
                raise Unavailable(spec.name, "token endpoint unreachable") from None
            value = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(value, str) or not value:
                raise Unavailable(spec.name, "token endpoint gave no access_token")
            lifetime = body.get("expires_in")
            lifetime = float(lifetime) if isinstance(lifetime, int | float) else 3600.0
            # Refreshed before expiry: a tenth of its life (at most a minute) early.
            tok.value = value
            tok.expires_at = time.monotonic() + lifetime - min(60.0, lifetime / 10)
            return value

    def new_session_id(self) -> str:
        return os.urandom(16).hex()


class _SessionGone(Exception):
    pass


async def _from_sse(resp: aiohttp.ClientResponse, want: Any) -> Any:
    """The JSON-RPC answer with id `want` from an SSE response (other messages skipped)."""
    data: list[bytes] = []
    seen = 0
    async for line in resp.content:
        seen += len(line)
        if seen > _MAX_ANSWER:
            break
        line = line.rstrip(b"\r\n")
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip())
        elif not line and data:
            msg = _decode(b"\n".join(data))
            data = []
            if isinstance(msg, dict) and msg.get("id") == want and "method" not in msg:
                return msg
    return None  # no answer in the stream: an invalid answer


def _check_status(spec: ServerSpec, status: int) -> None:
    if status in (401, 403):
        reason = f"upstream refused the credentials ({status})"
        raise Unavailable(spec.name, reason, healthy=spec.auth.get("type") == "passthrough")
    if status >= 300:
        raise Unavailable(spec.name, f"status {status}")


def _result(spec: ServerSpec, answer: Any) -> dict[str, Any]:
    """The `result` of a JSON-RPC answer; its `error` as `RpcError`."""
    if not isinstance(answer, dict):
        raise Unavailable(spec.name, "invalid answer")
    err = answer.get("error")
    if isinstance(err, dict):
        code = err.get("code")
        code = code if isinstance(code, int) else -32603
        raise RpcError(code, str(err.get("message", "")), err.get("data"))
    result = answer.get("result")
    if not isinstance(result, dict):
        raise Unavailable(spec.name, "invalid answer")
    return result
