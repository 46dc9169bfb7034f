"""The OpenAI side of the mock: chat completions (stream and not), embeddings, models."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from tollway.mock.content import count_words, openai_error
from tollway.mock.exchange import Call, MockAbort
from tollway.mock.state import Fault, MockState, begin

__all__ = ["chat_completions", "embeddings", "models", "send_openai_status"]

_encode = msgspec.json.Encoder().encode
_RETRY_AFTER = (b"retry-after", b"1")


class _Message(msgspec.Struct):
    content: Any = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _ChatRequest(msgspec.Struct):
    model: str = ""
    messages: list[_Message] = msgspec.field(default_factory=list)
    stream: bool | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream_options: _StreamOptions | None = None


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
    answers = state.answers
    limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    n = answers.length(limit)
    finish = "stop" if n == answers.tokens else "length"
    prompt = sum(4 + count_words(m.content) for m in req.messages)
    usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
    chat_id = state.next_id("chatcmpl-mock")
    created = int(time.time())
    if req.stream:
        head = _chunk_head(chat_id, created, req.model)
        usage_wanted = req.stream_options is not None and bool(req.stream_options.include_usage)
        await _chat_stream(state, call, fault, head, n, finish, usage if usage_wanted else None)
        return
    message = {"role": "assistant", "content": answers.text_of(n), "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    out = _encode(
        {
            "id": chat_id,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "choices": [choice],
            "usage": usage,
            "system_fingerprint": None,
        }
    )
    if fault.kind == "reset-mid":
        await call.respond_partial(out[: len(out) // 2], len(out))
    elif fault.kind == "truncated":
        await call.respond(200, out[: len(out) // 2])
    else:
        await call.respond(200, out)


def _chunk_head(chat_id: str, created: int, model: str) -> bytes:
    # Only id, created and model vary per request; the token tails are precomputed.
    return (
        b'data: {"id":"' + chat_id.encode() + b'","object":"chat.completion.chunk","created":'
        + str(created).encode() + b',"model":' + _encode(model)
        + b',"system_fingerprint":null,"choices":['
    )  # fmt: skip


async def _chat_stream(
    state: MockState,
    call: Call,
    fault: Fault,
    head: bytes,
    n: int,
    finish: str,
    usage: dict[str, int] | None,
) -> None:
    events = [
        head + b'{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
        b'"logprobs":null,"finish_reason":null}]}\n\n'
    ]
    deltas = state.answers.openai_deltas
    if fault.kind in ("reset-mid", "truncated"):
        events.extend(head + d for d in deltas[: max(n // 2, 1)])
        if fault.kind == "truncated":
            events.append(head + b'{"index":0,"delta":{"content":" trunc\n\n')
        if await call.stream(events, range(2, len(events)), state.itl_s):
            if fault.kind == "reset-mid":
                raise MockAbort("mock: stream cut before [DONE]")
            await call.end()
        return
    events.extend(head + d for d in deltas[:n])
    events.append(
        head + b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"' + finish.encode()
        + b'"}]}\n\n'
    )  # fmt: skip
    if usage is not None:
        events.append(head + b'],"usage":' + _encode(usage) + b"}\n\n")
    events.append(b"data: [DONE]\n\n")
    if await call.stream(events, range(2, n + 1), state.itl_s):
        await call.end()


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
