"""The OpenAI side of the mock: chat completions (stream and not), embeddings, models."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from tollway.mock.content import (
    TOOL_ARGUMENT_FRAGMENTS,
    TOOL_CALL_TOKENS,
    count_words,
    openai_error,
)
from tollway.mock.exchange import Call, MockAbort
from tollway.mock.lies import LIES, lie
from tollway.mock.state import Fault, MockState, begin

__all__ = [
    "OPENING",
    "chat_completions",
    "chat_stream_events",
    "chunk_head",
    "embeddings",
    "models",
    "send_openai_status",
]

_encode = msgspec.json.Encoder().encode
_RETRY_AFTER = (b"retry-after", b"1")
_TOOL_CALL_ID = "call_mock_1"
_TOOL_ARGUMENTS = "".join(TOOL_ARGUMENT_FRAGMENTS)
# The first chunk of a text answer, as a tail after the per-request `"choices":[` prefix.
OPENING = (
    b'{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
    b'"logprobs":null,"finish_reason":null}]}\n\n'
)


class _Message(msgspec.Struct):
    role: str = ""
    content: Any = None


class _Function(msgspec.Struct):
    name: str = ""


class _Tool(msgspec.Struct):
    function: _Function = msgspec.field(default_factory=_Function)


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _ChatRequest(msgspec.Struct):
    model: str = ""
    messages: list[_Message] = msgspec.field(default_factory=list)
    stream: bool | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream_options: _StreamOptions | None = None
    tools: list[_Tool] | None = None


class _EmbeddingsRequest(msgspec.Struct):
    model: str = ""
    input: Any = None
    dimensions: int | None = None
    encoding_format: str | None = None


async def send_openai_status(call: Call, status: int) -> None:
    """Answers with OpenAI's error body for `status` (and `retry-after` on 429)."""
    body = openai_error(status, f"mock: injected status {status}")
    headers: tuple[tuple[bytes, bytes], ...] = ((b"content-type", b"application/json"),)
    if status == 429:
        headers = (*headers, _RETRY_AFTER)
    await call.respond(status, body, headers)


async def _bad_request(call: Call, message: str) -> None:
    await call.respond(400, openai_error(400, message))


async def chat_completions(state: MockState, call: Call, body: bytes) -> None:
    try:
        req = msgspec.json.decode(body, type=_ChatRequest)
    except msgspec.MsgspecError as e:
        await _bad_request(call, f"Invalid request body: {e}")
        return
    fault = await begin(state, call, req.model, send_openai_status)
    if fault is None:
        return
    if fault.kind in LIES:
        echo = req.messages[0].content if req.messages else ""
        await lie(call, fault.kind, fault.status, bool(req.stream), str(echo))
        return
    # A model offered tools calls one, unless it is reading that call's result.
    calls_tool = bool(req.tools) and not (req.messages and req.messages[-1].role == "tool")
    answers = state.answers
    limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    n = TOOL_CALL_TOKENS if calls_tool else answers.length(limit)
    finish = "tool_calls" if calls_tool else "stop" if n == answers.tokens else "length"
    prompt = sum(4 + count_words(m.content) for m in req.messages)
    usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
    chat_id = state.next_id("chatcmpl-mock")
    created = int(time.time())
    tool = req.tools[0].function.name if req.tools and calls_tool else ""
    if req.stream:
        head = chunk_head(chat_id, created, req.model)
        usage_wanted = req.stream_options is not None and bool(req.stream_options.include_usage)
        opening, deltas = (
            _tool_call_tails(tool) if calls_tool else (OPENING, answers.openai_deltas[:n])
        )
        usage_sent = usage_wanted and fault.kind != "no-usage"
        await _chat_stream(
            state, call, fault, head, opening, deltas, finish, usage if usage_sent else None
        )
        return
    if calls_tool:
        function = {"name": tool, "arguments": _TOOL_ARGUMENTS}
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [{"id": _TOOL_CALL_ID, "type": "function", "function": function}],
        }
    else:
        message = {"role": "assistant", "content": answers.text_of(n), "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    answer = {
        "id": chat_id,
        "object": "chat.completion",
        "created": created,
        "model": req.model,
        "choices": [choice],
        "usage": usage,
        "system_fingerprint": None,
    }
    if fault.kind == "no-usage":
        del answer["usage"]
    out = _encode(answer)
    if fault.kind == "reset-mid":
        await call.respond_partial(out[: len(out) // 2], len(out))
    elif fault.kind == "truncated":
        await call.respond(200, out[: len(out) // 2])
    else:
        await call.respond(200, out)


def chunk_head(chat_id: str, created: int, model: str) -> bytes:
    # Only id, created and model vary per request; the token tails are precomputed.
    return (
        b'data: {"id":"' + chat_id.encode() + b'","object":"chat.completion.chunk","created":'
        + str(created).encode() + b',"model":' + _encode(model)
        + b',"system_fingerprint":null,"choices":['
    )  # fmt: skip


def _tool_call_tails(name: str) -> tuple[bytes, tuple[bytes, ...]]:
    """The opening chunk tail of a tool call (id, name, empty arguments) and one tail per
    argument fragment, the shape OpenAI streams tool calls in."""
    function = {"name": name, "arguments": ""}
    first = {"index": 0, "id": _TOOL_CALL_ID, "type": "function", "function": function}
    opening = {"role": "assistant", "content": None, "tool_calls": [first], "refusal": None}
    deltas = tuple(
        _choice_tail({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
        for fragment in TOOL_ARGUMENT_FRAGMENTS
    )
    return _choice_tail(opening), deltas


def _choice_tail(delta: dict[str, Any]) -> bytes:
    """A chunk tail after the per-request prefix, like `Answers.openai_deltas`."""
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
    return _encode(choice) + b"]}\n\n"


async def _chat_stream(
    state: MockState,
    call: Call,
    fault: Fault,
    head: bytes,
    opening: bytes,
    deltas: Sequence[bytes],
    finish: str,
    usage: dict[str, int] | None,
) -> None:
    """Streams `chat_stream_events`, each delta one token; reset-mid and truncated cut it
    halfway."""
    n = len(deltas)
    if fault.kind in ("reset-mid", "truncated"):
        events = [head + opening, *(head + d for d in deltas[: max(n // 2, 1)])]
        if fault.kind == "truncated":
            events.append(head + b'{"index":0,"delta":{"content":" trunc\n\n')
        if await call.stream(events, range(2, len(events)), state.itl_s):
            if fault.kind == "reset-mid":
                raise MockAbort("mock: stream cut before [DONE]")
            await call.end()
        return
    events = chat_stream_events(head, opening, deltas, finish, usage)
    if await call.stream(events, range(2, n + 1), state.itl_s):
        await call.end()


def chat_stream_events(
    head: bytes,
    opening: bytes,
    deltas: Sequence[bytes],
    finish: str,
    usage: dict[str, int] | None,
) -> list[bytes]:
    """A whole chat stream's events: `opening`, one chunk per delta tail, the finish chunk,
    the usage chunk when given, and `[DONE]` (the benchmarks replay it as the load test's)."""
    events = [head + opening, *(head + d for d in deltas)]
    events.append(
        head + b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"' + finish.encode()
        + b'"}]}\n\n'
    )  # fmt: skip
    if usage is not None:
        events.append(head + b'],"usage":' + _encode(usage) + b"}\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def _inputs(raw: Any) -> list[str | list[int]] | None:
    """The request's `input` as a list of items (text or token ids); None if malformed."""
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not raw:
        return None
    if all(isinstance(x, int) for x in raw):
        return [raw]
    if all(isinstance(x, str) for x in raw) or all(
        isinstance(x, list) and all(isinstance(t, int) for t in x) for x in raw
    ):
        return raw
    return None


async def embeddings(state: MockState, call: Call, body: bytes) -> None:
    try:
        req = msgspec.json.decode(body, type=_EmbeddingsRequest)
    except msgspec.MsgspecError as e:
        await _bad_request(call, f"Invalid request body: {e}")
        return
    items = _inputs(req.input)
    dim = state.settings.embedding_dimensions if req.dimensions is None else req.dimensions
    if items is None:
        await _bad_request(call, "input must be a string, a list of strings or token lists")
        return
    if not 1 <= dim <= 65536:
        await _bad_request(call, "dimensions must be within 1..65536")
        return
    fault = await begin(state, call, req.model, send_openai_status)
    if fault is None:
        return
    as_base64 = req.encoding_format == "base64"
    data = [
        {"object": "embedding", "index": i, "embedding": state.embedder.vector(x, dim, as_base64)}
        for i, x in enumerate(items)
    ]
    tokens = sum(len(x.split()) if isinstance(x, str) else len(x) for x in items)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    out = _encode({"object": "list", "data": data, "model": req.model, "usage": usage})
    if fault.kind == "reset-mid":
        await call.respond_partial(out[: len(out) // 2], len(out))
    elif fault.kind == "truncated":
        await call.respond(200, out[: len(out) // 2])
    else:
        await call.respond(200, out)


async def models(state: MockState, call: Call, body: bytes) -> None:
    await call.respond(200, state.models_body)
