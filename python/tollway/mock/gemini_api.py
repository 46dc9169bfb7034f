"""The Google side of the mock: Gemini API (`/v1beta/models/<m>:<method>`, API key) and Vertex
AI (`/v1/projects/<p>/locations/<l>/publishers/google/models/<m>:<method>`, bearer tokens from
the mock's OAuth token endpoint `/token`), in their wire shapes: `generateContent`,
`streamGenerateContent?alt=sse` (`data:` events separated by CRLF CRLF, no end marker),
`batchEmbedContents`, `predict` (Vertex embeddings) and google.rpc error bodies.

Models whose name contains `thinking` report thought and cached tokens; `mock-blocked` has its
prompt blocked for safety; the `mock-*` faults of `tollway.mock.state` apply as everywhere.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import msgspec

from tollway.mock.content import TOOL_ARGUMENTS, TOOL_CALL_TOKENS, count_words
from tollway.mock.exchange import Call
from tollway.mock.faults import respond_whole, stream_events
from tollway.mock.state import MockState, begin

__all__ = ["VERTEX_TOKEN_PREFIX", "google_error", "route", "token"]

_encode = msgspec.json.Encoder().encode
VERTEX_TOKEN_PREFIX: Final = "ya29.mock-"  # noqa: S105 (the mock's fake tokens)
_STATUS: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# Reported by `thinking` models, to exercise usage details.
THOUGHT_TOKENS: Final = 7
CACHED_TOKENS: Final = 2

ModelHandler = Callable[[MockState, Call, bytes, str, bool], Awaitable[None]]


def google_error(status: int, message: str) -> bytes:
    name = _STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    return _encode({"error": {"code": status, "message": message, "status": name}})


async def _error(call: Call, status: int, message: str) -> None:
    await call.respond(status, google_error(status, message))


async def _status(call: Call, status: int) -> None:
    await _error(call, status, f"mock: injected status {status}")


def route(path: str) -> tuple[ModelHandler, str, bool] | None:
    """(handler, model, is Vertex) for a Gemini or Vertex model path, else None."""
    if path.startswith("/v1beta/models/"):
        rest, vertex = path.removeprefix("/v1beta/models/"), False
    elif path.startswith("/v1/projects/") and "/publishers/google/models/" in path:
        rest, vertex = path.partition("/publishers/google/models/")[2], True
    else:
        return None
    model, _, method = unquote(rest).rpartition(":")
    handler = _METHODS.get(method)
    return (handler, model, vertex) if handler is not None and model else None


def _authorized(call: Call, vertex: bool) -> bool:
    headers = dict(call.record.headers)
    if vertex:
        auth = headers.get(b"authorization", b"").decode("latin-1")
        return auth.startswith("Bearer " + VERTEX_TOKEN_PREFIX)
    return bool(headers.get(b"x-goog-api-key"))


async def token(state: MockState, call: Call, body: bytes) -> None:
    """OAuth 2.0 token endpoint for service-account JWT grants (RFC 7523), as google-auth
    calls it: the assertion must be a JWT for the cloud-platform scope."""
    form = parse_qs(body.decode("latin-1"))
    grant = form.get("grant_type", [""])[0]
    assertion = form.get("assertion", [""])[0].split(".")
    try:
        claims = msgspec.json.decode(base64.urlsafe_b64decode(assertion[1] + "=="))
    except (IndexError, ValueError, msgspec.DecodeError):
        claims = {}
    if grant != "urn:ietf:params:oauth:grant-type:jwt-bearer" or len(assertion) != 3:
        await call.respond(400, b'{"error":"invalid_grant","error_description":"bad grant"}')
        return
    if "cloud-platform" not in str(claims.get("scope", "")):
        await call.respond(400, b'{"error":"invalid_scope","error_description":"scope"}')
        return
    access = state.next_id(VERTEX_TOKEN_PREFIX)
    out = {"access_token": access, "expires_in": 3599, "token_type": "Bearer"}
    await call.respond(200, _encode(out))


def _prompt_tokens(req: dict[str, Any]) -> int:
    system = (req.get("systemInstruction") or {}).get("parts") or []
    contents = req.get("contents") or []
    return count_words(system) + sum(4 + count_words(c.get("parts")) for c in contents)


def _reads_tool_result(req: dict[str, Any]) -> bool:
    contents = req.get("contents") or []
    parts = contents[-1].get("parts") or [] if contents else []
    return any(isinstance(p, dict) and "functionResponse" in p for p in parts)


def _usage(prompt: int, n: int, model: str) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": n,
        "totalTokenCount": prompt + n,
    }
    if "thinking" in model:
        usage["thoughtsTokenCount"] = THOUGHT_TOKENS
        usage["cachedContentTokenCount"] = CACHED_TOKENS
        usage["totalTokenCount"] += THOUGHT_TOKENS
    return usage


async def _read(call: Call, body: bytes, vertex: bool) -> dict[str, Any] | None:
    """The request body after the auth check, or None when an error was answered."""
    if not _authorized(call, vertex):
        await _error(call, 401, "mock: missing or invalid credentials")
        return None
    try:
        req = msgspec.json.decode(body)
    except msgspec.DecodeError as e:
        await _error(call, 400, f"Invalid JSON payload received. {e}")
        return None
    if not isinstance(req, dict):
        await _error(call, 400, "Invalid JSON payload received. Expected an object.")
        return None
    return req


def _tool(req: dict[str, Any]) -> str | None:
    """The function a model offered tools calls, unless it is reading a call's result."""
    tools = req.get("tools") or []
    declarations = tools[0].get("functionDeclarations") or [] if tools else []
    if not declarations or _reads_tool_result(req):
        return None
    name: str | None = declarations[0].get("name")
    return name


async def _generate(
    state: MockState, call: Call, body: bytes, model: str, vertex: bool, stream: bool
) -> None:
    req = await _read(call, body, vertex)
    if req is None:
        return
    if not req.get("contents"):
        await _error(call, 400, "* GenerateContentRequest.contents: contents is not specified")
        return
    fault = await begin(state, call, model, _status)
    if fault is None:
        return
    tool = _tool(req)
    answers = state.answers
    n = (
        TOOL_CALL_TOKENS
        if tool
        else answers.length((req.get("generationConfig") or {}).get("maxOutputTokens"))
    )
    finish = "STOP" if tool or n == answers.tokens else "MAX_TOKENS"
    prompt = _prompt_tokens(req)
    common = {"modelVersion": model, "responseId": state.next_id("mockresp")}
    if model == "mock-blocked":
        out = _encode(
            {
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
                **common,
            }
        )
        if stream:
            await stream_events(state, call, fault, [b"data: " + out + b"\r\n\r\n"], b"")
        else:
            await respond_whole(call, fault, out)
        return
    pieces: list[list[dict[str, Any]]]
    if tool:
        pieces = [[{"functionCall": {"name": tool, "args": TOOL_ARGUMENTS}}]]
    else:
        texts = [answers.text_of(i + 1)[len(answers.text_of(i)) :] for i in range(n)]
        pieces = [[{"text": t}] for t in texts] or [[{"text": ""}]]
    if not stream:
        parts = pieces[0] if tool else [{"text": answers.text_of(n)}]
        whole = {"content": {"parts": parts, "role": "model"}, "finishReason": finish, "index": 0}
        usage = _usage(prompt, n, model)
        out = _encode({"candidates": [whole], "usageMetadata": usage, **common})
        await respond_whole(call, fault, out)
        return
    # One event per token (a tool call is one event); the last carries the finish reason.
    events = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        candidate: dict[str, Any] = {"content": {"parts": piece, "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = finish
        usage = _usage(prompt, n if last else i + 1, model)
        chunk = {"candidates": [candidate], "usageMetadata": usage, **common}
        events.append(b"data: " + _encode(chunk) + b"\r\n\r\n")
    await stream_events(
        state, call, fault, events, b'data: {"candidates": [{"content": {"par\r\n\r\n'
    )


async def _embed(
    state: MockState, call: Call, body: bytes, model: str, vertex: bool, stream: bool
) -> None:
    req = await _read(call, body, vertex)
    if req is None:
        return
    dim = state.settings.embedding_dimensions
    if vertex:  # predict: {"instances": [{"content": ...}], "parameters": {...}}
        texts = [str(i.get("content", "")) for i in req.get("instances") or []]
        dim = (req.get("parameters") or {}).get("outputDimensionality") or dim
    else:  # batchEmbedContents: {"requests": [{"model", "content": {"parts"}}]}
        requests = req.get("requests") or []
        texts = [" ".join(p.get("text", "") for p in r["content"]["parts"]) for r in requests]
        dim = (requests[0].get("outputDimensionality") if requests else None) or dim
    if not texts:
        await _error(call, 400, "mock: nothing to embed")
        return
    fault = await begin(state, call, model, _status)
    if fault is None:
        return
    vectors = [state.embedder.vector(t, dim, False) for t in texts]
    if vertex:
        predictions = [
            {"embeddings": {"values": v, "statistics": {"token_count": len(t.split())}}}
            for v, t in zip(vectors, texts, strict=True)
        ]
        await call.respond(200, _encode({"predictions": predictions}))
    else:
        await call.respond(200, _encode({"embeddings": [{"values": v} for v in vectors]}))


async def _generate_whole(s: MockState, c: Call, b: bytes, m: str, v: bool) -> None:
    await _generate(s, c, b, m, v, stream=False)


async def _generate_stream(s: MockState, c: Call, b: bytes, m: str, v: bool) -> None:
    if b"alt=sse" not in c.record.query:
        await _error(c, 400, "mock: this mock streams only with alt=sse")
        return
    await _generate(s, c, b, m, v, stream=True)


async def _embed_any(s: MockState, c: Call, b: bytes, m: str, v: bool) -> None:
    await _embed(s, c, b, m, v, stream=False)


_METHODS: Final[dict[str, ModelHandler]] = {
    "generateContent": _generate_whole,
    "streamGenerateContent": _generate_stream,
    "batchEmbedContents": _embed_any,
    "predict": _embed_any,
}
