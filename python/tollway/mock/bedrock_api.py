"""The AWS Bedrock side of the mock: Converse (`POST /model/<id>/converse`), ConverseStream
(`/converse-stream`, binary `application/vnd.amazon.eventstream` frames with CRCs) and
InvokeModel (`/invoke`) for Titan Text Embeddings and Cohere Embed, in their wire shapes,
behind a SigV4 check.

The check recomputes the signature with the published algorithm, written here independently of
the gateway's signer (AWS's Rust crate), for the mock's own credentials `MOCK_ACCESS_KEY_ID` /
`MOCK_SECRET_ACCESS_KEY`: a wrong key, date, header or body hash is a 403, as on AWS.
`mock-status-429` answers like Bedrock's throttling, `mock-throttled-mid` sends a
`throttlingException` frame in the middle of a stream, and `mock-corrupt-frame` flips a bit of
the last frame's length (its prelude CRC no longer matches).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import quote, unquote

import msgspec

from tollway.mock.content import (
    TOOL_ARGUMENT_FRAGMENTS,
    TOOL_ARGUMENTS,
    TOOL_CALL_TOKENS,
    count_words,
)
from tollway.mock.exchange import Call
from tollway.mock.faults import respond_whole, stream_events
from tollway.mock.state import Fault, MockState, begin

__all__ = [
    "MOCK_ACCESS_KEY_ID",
    "MOCK_SECRET_ACCESS_KEY",
    "answer",
    "event_frame",
    "route",
    "sigv4_signature",
]

MOCK_ACCESS_KEY_ID: Final = "AKIAMOCKTOLLWAY00001"
MOCK_SECRET_ACCESS_KEY: Final = "mock+secret/Tollway0Bedrock0Tests0Only00"  # noqa: S105

_encode = msgspec.json.Encoder().encode
_JSON: Final = (b"content-type", b"application/json")
_EVENTSTREAM: Final = ((b"content-type", b"application/vnd.amazon.eventstream"),)
_ERRORS: Final = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_TOOL_USE_ID = "tooluse_mock_1"
# Real stream events carry a random-length "p" field to hide the content's length.
_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"


def route(path: str) -> tuple[str, str] | None:
    """(model id, method: converse, converse-stream or invoke) for a Bedrock path, else None."""
    if not path.startswith("/model/"):
        return None
    model, _, method = path.removeprefix("/model/").rpartition("/")
    if method not in ("converse", "converse-stream", "invoke") or not model:
        return None
    return unquote(model), method


async def answer(state: MockState, call: Call, body: bytes, model: str, method: str) -> None:
    problem = _check_signature(call, body)
    if problem is not None:
        await _error(call, 403, problem)
        return
    if method == "invoke":
        await _invoke(state, call, body, model)
    else:
        await _converse(state, call, body, model, method == "converse-stream")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_signature(
    secret: str,
    method: str,
    raw_path: str,
    query: str,
    headers: dict[str, str],
    signed: Sequence[str],
    body: bytes,
    amz_date: str,
    scope: str,
) -> str:
    """The SigV4 signature (hex) of a request, per AWS's published algorithm: the path's
    segments encoded again (all services but S3), query pairs sorted, signed headers trimmed."""
    path = "/".join(quote(seg, safe="-_.~") for seg in raw_path.split("/"))
    pairs = sorted(tuple([*p.split("=", 1), ""])[:2] for p in query.split("&") if p)
    canonical_query = "&".join(f"{k}={v}" for k, v in pairs)
    canonical_headers = "".join(f"{h}:{' '.join(headers.get(h, '').split())}\n" for h in signed)
    canonical = "\n".join(
        (
            method,
            path,
            canonical_query,
            canonical_headers,
            ";".join(signed),
            hashlib.sha256(body).hexdigest(),
        )
    )
    to_sign = "\n".join(
        ("AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest())
    )
    date, region, service, terminal = scope.split("/")
    key = _hmac(("AWS4" + secret).encode(), date)
    for part in (region, service, terminal):
        key = _hmac(key, part)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _check_signature(call: Call, body: bytes) -> str | None:
    """Why the request's signature is not valid, or None when it is."""
    headers: dict[str, str] = {}
    for k, v in call.record.headers:
        headers[k.decode("latin-1").lower()] = v.decode("latin-1")
    auth = headers.get("authorization", "")
    algorithm, _, fields = auth.partition(" ")
    parts = dict(p.strip().split("=", 1) for p in fields.split(",") if "=" in p)
    if algorithm != "AWS4-HMAC-SHA256" or not {"Credential", "SignedHeaders", "Signature"} <= set(
        parts
    ):
        return "Missing Authentication Token"
    key_id, _, scope = parts["Credential"].partition("/")
    if key_id != MOCK_ACCESS_KEY_ID:
        return "The security token included in the request is invalid."
    signed = parts["SignedHeaders"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return "host and x-amz-date must be signed"
    raw = call.scope.get("raw_path")
    raw_path = raw.decode("latin-1") if raw else quote(call.record.path, safe="/")
    expected = sigv4_signature(
        MOCK_SECRET_ACCESS_KEY,
        call.record.method,
        raw_path,
        call.record.query.decode("latin-1"),
        headers,
        signed,
        body,
        headers.get("x-amz-date", ""),
        scope,
    )
    if not hmac.compare_digest(expected, parts["Signature"]):
        return "The request signature we calculated does not match the signature you provided."
    return None


async def _error(call: Call, status: int, message: str) -> None:
    kind = _ERRORS.get(
        status, "InternalServerException" if status >= 500 else "ValidationException"
    )
    headers = (_JSON, (b"x-amzn-errortype", kind.encode()))
    await call.respond(status, _encode({"message": message}), headers)


async def _status(call: Call, status: int) -> None:
    if status == 429:
        await _error(call, 429, "Too many requests, please wait before trying again.")
    else:
        await _error(call, status, f"mock: injected status {status}")


def event_frame(headers: Sequence[tuple[str, str]], payload: bytes) -> bytes:
    """One event-stream message: prelude (total and headers length, CRC32), string headers,
    payload, and the CRC32 of all that precedes it."""
    head = b"".join(
        struct.pack(">B", len(k)) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for k, v in headers
    )
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack(">I", zlib.crc32(message))


def _event(kind: str, data: dict[str, Any]) -> bytes:
    headers = (
        (":event-type", kind),
        (":content-type", "application/json"),
        (":message-type", "event"),
    )
    return event_frame(headers, _encode({**data, "p": _PAD[: 3 + len(kind) % 7]}))


def _exception(kind: str, message: str) -> bytes:
    headers = (
        (":exception-type", kind),
        (":content-type", "application/json"),
        (":message-type", "exception"),
    )
    return event_frame(headers, _encode({"message": message}))


def _reads_tool_result(req: dict[str, Any]) -> bool:
    messages = req.get("messages") or []
    blocks = messages[-1].get("content") or [] if messages else []
    return any(isinstance(b, dict) and "toolResult" in b for b in blocks)


async def _converse(state: MockState, call: Call, body: bytes, model: str, stream: bool) -> None:
    try:
        req = msgspec.json.decode(body)
    except msgspec.DecodeError:
        await _error(call, 400, "Malformed input request, please reformat your input and retry.")
        return
    if not isinstance(req, dict) or not req.get("messages"):
        await _error(call, 400, "A conversation must start with a user message.")
        return
    fault = await begin(state, call, model, _status)
    if fault is None:
        return
    tools = (req.get("toolConfig") or {}).get("tools") or []
    tool = tools[0]["toolSpec"]["name"] if tools and not _reads_tool_result(req) else None
    answers = state.answers
    limit = (req.get("inferenceConfig") or {}).get("maxTokens")
    n = TOOL_CALL_TOKENS if tool else answers.length(limit)
    stop = "tool_use" if tool else "end_turn" if n == answers.tokens else "max_tokens"
    system = req.get("system") or []
    prompt = count_words(system) + sum(4 + count_words(m.get("content")) for m in req["messages"])
    usage = {"inputTokens": prompt, "outputTokens": n, "totalTokens": prompt + n}
    if not stream:
        if tool:
            block: dict[str, Any] = {
                "toolUse": {"toolUseId": _TOOL_USE_ID, "name": tool, "input": TOOL_ARGUMENTS}
            }
        else:
            block = {"text": answers.text_of(n)}
        whole = {
            "output": {"message": {"role": "assistant", "content": [block]}},
            "stopReason": stop,
            "usage": usage,
            "metrics": {"latencyMs": 1},
        }
        await respond_whole(call, fault, _encode(whole))
        return
    await _stream(state, call, fault, model, tool, n, stop, usage)


async def _stream(
    state: MockState,
    call: Call,
    fault: Fault,
    model: str,
    tool: str | None,
    n: int,
    stop: str,
    usage: dict[str, int],
) -> None:
    """ConverseStream's frames: messageStart, the block (text deltas, or a toolUse start and its
    input deltas), contentBlockStop, messageStop, metadata."""
    events = [_event("messageStart", {"role": "assistant"})]
    deltas: list[dict[str, Any]]
    if tool:
        start = {"toolUse": {"toolUseId": _TOOL_USE_ID, "name": tool}}
        events.append(_event("contentBlockStart", {"contentBlockIndex": 0, "start": start}))
        deltas = [{"toolUse": {"input": f}} for f in TOOL_ARGUMENT_FRAGMENTS]
    else:
        texts = [state.answers.text_of(i + 1)[len(state.answers.text_of(i)) :] for i in range(n)]
        deltas = [{"text": t} for t in texts]
    events += [_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": d}) for d in deltas]
    if model == "mock-throttled-mid":
        events = events[: max(len(events) // 2, 2)]
        events.append(_exception("throttlingException", "Too many tokens, please wait."))
    else:
        events.append(_event("contentBlockStop", {"contentBlockIndex": 0}))
        events.append(_event("messageStop", {"stopReason": stop}))
        events.append(_event("metadata", {"usage": usage, "metrics": {"latencyMs": 1}}))
    if model == "mock-corrupt-frame":
        events[-1] = bytes([events[-1][0], events[-1][1], events[-1][2] ^ 1]) + events[-1][3:]
    broken = _event("contentBlockDelta", {"contentBlockIndex": 0})[:20]
    await stream_events(state, call, fault, events, broken, _EVENTSTREAM)


_COHERE_INPUT_TYPES: Final = frozenset(
    ("search_document", "search_query", "classification", "clustering")
)


async def _invoke(state: MockState, call: Call, body: bytes, model: str) -> None:
    """InvokeModel for the embedding models: Titan (`{"inputText", "dimensions"}`, one text)
    and Cohere Embed (`{"texts", "input_type", "embedding_types"}`, up to 96); other models
    answer as Bedrock does for a body the model does not take. A fault name before the first
    dot of the id applies (`mock-status-429.amazon.titan-embed-text-v2:0`)."""
    try:
        req = msgspec.json.decode(body)
    except msgspec.DecodeError:
        req = None
    if not isinstance(req, dict):
        await _error(call, 400, "Malformed input request, please reformat your input and retry.")
        return
    titan = "titan-embed" in model
    if titan:
        texts = [req.get("inputText")]
        dim = req.get("dimensions", 1024)
        problem = None if dim in (256, 512, 1024) else "dimensions must be 256, 512 or 1024"
    elif "cohere.embed" in model:
        texts = req.get("texts") or []
        dim = req.get("output_dimension") or state.settings.embedding_dimensions
        problem = None
        if req.get("input_type") not in _COHERE_INPUT_TYPES:
            problem = "#: required key [input_type] not found"
        elif not 0 < len(texts) <= 96:
            problem = "#/texts: expected maxLength: 96"
    else:
        texts, dim, problem = [], 0, None
    if not texts or not all(isinstance(t, str) and t for t in texts):
        problem = problem or "Malformed input request: the model takes no such body"
    if problem is not None:
        await _error(call, 400, problem)
        return
    fault = await begin(state, call, model.partition(".")[0], _status)
    if fault is None:
        return
    vectors = [state.embedder.vector(str(t), dim, False) for t in texts]
    tokens = sum(count_words(t) for t in texts)
    if titan:
        out: dict[str, Any] = {
            "embedding": vectors[0],
            "embeddingsByType": {"float": vectors[0]},
            "inputTextTokenCount": tokens,
        }
    elif req.get("embedding_types"):
        kind = "embeddings_by_type"
        out = {"id": "mock-embed-1", "embeddings": {"float": vectors}, "response_type": kind}
    else:
        out = {"id": "mock-embed-1", "embeddings": vectors, "response_type": "embeddings_floats"}
    if not titan:
        out["texts"] = texts
    count = (b"x-amzn-bedrock-input-token-count", str(tokens).encode())
    await call.respond(200, _encode(out), (_JSON, count))
