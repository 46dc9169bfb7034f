"""The mock's raw ASGI app: lifespan, routing, request recording and the `/_mock` endpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from tollway.mock import anthropic_api, bedrock_api, gemini_api, mcp_api, openai_api, responses_api
from tollway.mock.content import openai_error
from tollway.mock.exchange import ASGIApp, Call, Receive, RequestRecord, Scope, Send
from tollway.mock.settings import MockSettings
from tollway.mock.state import MockState

__all__ = ["MockApp", "create_app"]

Handler = Callable[[MockState, Call, bytes], Awaitable[None]]


class MockApp:
    """An ASGI app answering like OpenAI, Anthropic, Gemini, Vertex AI and Bedrock; `state` is
    this instance's alone."""

    def __init__(self, settings: MockSettings) -> None:
        self.state = MockState(settings)
        # Bare paths too, for clients configured with a base URL without /v1.
        self._routes: dict[str, dict[str, Handler]] = {
            "/v1/chat/completions": {"POST": openai_api.chat_completions},
            "/chat/completions": {"POST": openai_api.chat_completions},
            "/v1/embeddings": {"POST": openai_api.embeddings},
            "/embeddings": {"POST": openai_api.embeddings},
            "/v1/models": {"GET": openai_api.models},
            "/models": {"GET": openai_api.models},
            "/v1/messages": {"POST": anthropic_api.messages},
            "/v1/responses": {"POST": responses_api.create_response},
            "/responses": {"POST": responses_api.create_response},
            "/token": {"POST": gemini_api.token},  # Google OAuth, for Vertex
            "/mcp": {"POST": mcp_api.mcp},
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        body: bytes = message.get("body", b"")
        # Most bodies arrive in one message; only join when they do not.
        if message.get("more_body", False):
            parts = [body]
            while message.get("more_body", False):
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                parts.append(message.get("body", b""))
            body = b"".join(parts)
        elif message["type"] == "http.disconnect":
            return
        path: str = scope["path"]
        record = RequestRecord(scope, body)
        call = Call(scope, receive, send, record)
        try:
            if path.startswith("/_mock/") or path == "/healthz":
                await self._control(call, path)
                return
            self.state.requests.append(record)
            if path.startswith("/openai/deployments/"):
                # Azure OpenAI: /openai/deployments/<deployment>/chat/completions?api-version=
                path = "/" + path.removeprefix("/openai/deployments/").partition("/")[2]
            elif path.startswith("/openai/v1/"):
                path = path.removeprefix("/openai")  # Azure OpenAI's v1 API (Responses)
            if path.startswith(("/v1/responses/", "/responses/")) and scope["method"] == "GET":
                await responses_api.retrieve_response(self.state, call, path.rpartition("/")[2])
                return
            methods = self._routes.get(path)
            if methods is None and await self._model_path(call, path, body):
                return
            if methods is None:
                await call.respond(404, openai_error(404, f"Unknown path {path}"))
                return
            handler = methods.get(scope["method"])
            if handler is None:
                await call.respond(405, openai_error(405, "Method not allowed"))
                return
            await handler(self.state, call, body)
        finally:
            call.close()

    async def _model_path(self, call: Call, path: str, body: bytes) -> bool:
        """Gemini, Vertex and Bedrock name the model in the path; True if answered here."""
        if call.record.method != "POST":
            return False
        google = gemini_api.route(path)
        if google is not None:
            handler, model, vertex = google
            await handler(self.state, call, body, model, vertex)
            return True
        bedrock = bedrock_api.route(path)
        if bedrock is not None:
            await bedrock_api.answer(self.state, call, body, *bedrock)
            return True
        return False

    async def _control(self, call: Call, path: str) -> None:
        method = call.record.method
        if path == "/healthz":
            await call.respond(200, b'{"status":"ok"}')
        elif path == "/_mock/requests" and method == "GET":
            out = msgspec.json.encode([r.to_json() for r in self.state.requests])
            await call.respond(200, out)
        elif path == "/_mock/requests" and method == "DELETE":
            self.state.requests.clear()
            await call.respond(200, b'{"cleared":true}')
        else:
            await call.respond(404, openai_error(404, f"Unknown path {path}"))


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(settings: MockSettings) -> ASGIApp:
    """A fresh mock app for `settings`, usable in-process or behind any ASGI server."""
    return MockApp(settings)
