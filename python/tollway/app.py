"""The ASGI application: lifespan, routing by path, and the small endpoints.

Granian imports `tollway.app:create_app` as a factory in each worker; the config path comes
from `TOLLWAY_CONFIG`. Routing uses the ASGI `path` the server parsed, never the Host header.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from time import perf_counter
from typing import TYPE_CHECKING

import msgspec

from tollway.asgi import JSON, Receive, RequestHead, Scope, Send, send_error, send_json
from tollway.engine import Denial, Runtime, load_runtime, warm_tokenizer
from tollway.errors import GatewayError
from tollway.ingress.anthropic import count_tokens
from tollway.logs import RequestLogging
from tollway.logs import setup as setup_request_log
from tollway.mcp import McpGateway
from tollway.proxy import Proxy
from tollway.proxy.handler import Endpoint
from tollway.reload import watch_config
from tollway.serve import DRAIN_FILE_ENV, METRICS_DIR_ENV
from tollway.telemetry import CONTENT_TYPE, Telemetry, TelemetrySettings
from tollway.upstream import AiohttpUpstream, UpstreamClient

# Young collections every 10k container allocations instead of 700 (the heap stays flat: what
# a request allocates is freed by reference count; the soak test watches RSS).
_GC_THRESHOLDS = (10_000, 20, 20)

if TYPE_CHECKING:
    from tollway.state import RedisSync

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("tollway")
_encode = msgspec.json.Encoder().encode
_ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "messages",
    "/v1/responses": "responses",
}


class Gateway:
    """One worker's gateway: a `Runtime` for the current config and one upstream client."""

    def __init__(
        self,
        runtime: Runtime,
        config_path: str | None = None,
        telemetry: Telemetry | None = None,
        request_log: RequestLogging | None = None,
    ) -> None:
        self.runtime = runtime
        self.telemetry = telemetry
        self.request_log = request_log
        self.config_path = config_path
        self.proxy: Proxy | None = None
        self.mcp: McpGateway | None = None
        self.draining = False
        self._background: set[asyncio.Future[None]] = set()
        # Created by `tollway serve` on SIGTERM: from then on /readyz says 503.
        self.drain_file = os.environ.get(DRAIN_FILE_ENV)

    def swap(self, runtime: Runtime) -> None:
        """Installs a new config; requests in flight finish on the one they started with."""
        self.runtime = runtime
        if self.proxy is not None:
            self.proxy.runtime = runtime
        # New models may need another tokenizer table: load it off the event loop.
        warm = asyncio.ensure_future(asyncio.to_thread(_warm_tokenizers, runtime))
        self._background.add(warm)  # a reference until done, so it is not collected early
        warm.add_done_callback(self._background.discard)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            try:
                await self._http(scope, receive, send)
            except Exception:
                # A bug must cost one request, never the worker; the log has no request data.
                log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
                with contextlib.suppress(Exception):
                    err = GatewayError.internal()
                    await send_error(send, err, RequestHead(scope["headers"]).request_id)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        proxy = self.proxy
        if path in _ENDPOINTS:
            if method != "POST":
                await send_error(
                    send,
                    GatewayError.method_not_allowed(),
                    RequestHead(scope["headers"]).request_id,
                )
            elif proxy is None:
                err = GatewayError.not_ready()
                await send_error(send, err, RequestHead(scope["headers"]).request_id)
            else:
                await proxy.handle(_ENDPOINTS[path], scope, receive, send)
        elif path == "/v1/messages/count_tokens" and method == "POST":
            await count_tokens(self.runtime, scope, receive, send)
        elif path.startswith("/v1/responses/") and method == "GET" and proxy is not None:
            await proxy.retrieve_response(scope, send)
        elif path.startswith("/mcp/") and self.mcp is not None:
            await self.mcp.handle(scope, receive, send)
        elif path == "/healthz":
            await send_json(send, 200, b'{"status":"ok"}', [JSON])
        elif path == "/readyz":
            ready = proxy is not None and not self.draining
            # A stat of a local tmp file on a probe, not on the request path; ~1 µs.
            drain = self.drain_file
            if ready and drain is not None and os.path.exists(drain):  # noqa: ASYNC240
                self.draining = ready = False
            body = b'{"status":"ready"}' if ready else b'{"status":"not ready"}'
            await send_json(send, 200 if ready else 503, body, [JSON])
        elif path == "/metrics" and self.telemetry is not None:
            body = await self.telemetry.render()
            await send_json(send, 200, body, [(b"content-type", CONTENT_TYPE.encode())])
        elif path == "/v1/models" and method == "GET":
            await self._models(scope, send)
        elif self.request_log is not None and self.request_log.analytics.handles(path):
            await self.request_log.analytics(self.runtime, scope, send)
        else:
            await send_error(
                send, GatewayError.not_found(), RequestHead(scope["headers"]).request_id
            )

    def _rejected(self) -> None:
        if self.telemetry is not None:
            self.telemetry.metrics.add("llm_gateway_config_parsing_failures", ())

    async def _models(self, scope: Scope, send: Send) -> None:
        started = perf_counter()
        head = RequestHead(scope["headers"])
        rt = self.runtime
        key = rt.engine.authenticate(head.authorization)
        if isinstance(key, Denial):
            err = GatewayError.from_denial(key)
            await send_error(send, err, head.request_id, [_timing(started)])
            return
        accounts = {u.name: u.account for u in rt.upstreams}
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": accounts.get(name, "tollway")}
            for name in rt.engine.models_for(key)
        ]
        body = _encode({"object": "list", "data": data})
        headers = [JSON, (b"x-request-id", head.request_id), _timing(started)]
        await send_json(send, 200, body, headers)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        client: UpstreamClient | None = None
        watcher: asyncio.Task[None] | None = None
        warm: asyncio.Future[None] | None = None
        state_sync: RedisSync | None = None
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                connect_s = self.runtime.settings.connect_timeout_ms / 1000
                client = AiohttpUpstream(connect_s)
                self.mcp = McpGateway(lambda: self.runtime, client.session, self.telemetry)
                self.proxy = Proxy(self.runtime, client, self.telemetry, self.mcp)
                if self.telemetry is not None:
                    await self.telemetry.start(client.session)
                    self.telemetry.watch_engine(lambda: self.runtime.engine)
                if self.request_log is not None:
                    self.request_log.start(client.session, lambda: self.runtime.engine)
                # Load the BPE tables off the event loop (the Rust call releases the GIL), so
                # the first stream without provider usage does not pay ~0.5 s for them.
                warm = asyncio.ensure_future(asyncio.to_thread(_warm_tokenizers, self.runtime))
                if self.config_path:
                    watch = watch_config(
                        self.config_path, lambda: self.runtime, self.swap, rejected=self._rejected
                    )
                    watcher = asyncio.ensure_future(watch)
                if self.runtime.settings.state_backend == "redis":
                    # Limits shared across replicas: a background sync with Redis, never on
                    # the request path. It reads the current engine each tick (reload swaps it).
                    from tollway.state import RedisSync  # only deployments using Redis load it

                    count = self.telemetry.metrics.add if self.telemetry is not None else None
                    state_sync = RedisSync.from_settings(
                        self.runtime.settings, lambda: self.runtime.engine, count
                    )
                    state_sync.start()
                _settle_heap()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                self.draining = True
                if warm is not None:
                    warm.cancel()
                if watcher is not None:
                    watcher.cancel()
                if state_sync is not None:
                    # Pushes the last deltas and leaves the replica count; bounded by timeouts.
                    await state_sync.stop()
                if self.telemetry is not None:
                    # Bounded: a dead collector cannot hold up the shutdown.
                    await self.telemetry.stop(timeout_s=5.0)
                if self.proxy is not None and self.proxy.cache is not None:
                    await self.proxy.cache.close()
                if self.request_log is not None:
                    # After telemetry's last intake, so every record has reached the writer.
                    await self.request_log.stop()
                if client is not None:
                    await client.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _timing(started: float) -> tuple[bytes, bytes]:
    """Server-Timing of a response made by the gateway alone (no model, no guardrail)."""
    ms = (perf_counter() - started) * 1000
    return b"server-timing", f"gateway;dur={ms:.3f}, total;dur={ms:.3f}".encode()


def _warm_tokenizers(runtime: Runtime) -> None:
    """Loads the BPE tables the configured models use (o200k ~47 MB, cl100k ~25 MB), and
    only those; each loads once per process."""
    warm_tokenizer("gpt-4o")  # the default estimate for models without a table of their own
    for model_id in {u.model_id for u in runtime.upstreams}:
        warm_tokenizer(model_id)


def create_app(config_path: str | None = None) -> Gateway:
    """The ASGI app for a config file or directory (default: `$TOLLWAY_CONFIG`)."""
    path = config_path or os.environ.get("TOLLWAY_CONFIG")
    if not path:
        raise RuntimeError("no config: set TOLLWAY_CONFIG or pass a path")
    logging.basicConfig(level=os.environ.get("TOLLWAY_LOG_LEVEL", "INFO").upper())
    runtime = load_runtime(path)
    sections = msgspec.json.decode(runtime.settings.telemetry_json)
    settings = TelemetrySettings.from_config(
        sections.get("otel"), sections.get("metrics"), os.environ
    )
    telemetry = Telemetry(settings, metrics_dir=os.environ.get(METRICS_DIR_ENV))
    request_log = setup_request_log(sections, telemetry, path)
    return Gateway(runtime, config_path=path, telemetry=telemetry, request_log=request_log)


def _settle_heap() -> None:
    """Moves what startup built (modules, the compiled config: ~10^5 objects) out of the
    cyclic collector's reach and lets young collections run less often. A request allocates
    a few hundred containers that die by reference count; the collector otherwise walked the
    whole heap every ~70k allocations (~4% of a worker's CPU at saturation, perf)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
