"""The Anthropic side of the mock: the Messages API, stream and not, with the same faults."""

from __future__ import annotations

from typing import Any

import msgspec

from tollway.mock.content import anthropic_error, count_words
from tollway.mock.exchange import Call, MockAbort
from tollway.mock.state import MockState, begin

__all__ = ["messages"]

_encode = msgspec.json.Encoder().encode

_BLOCK_START = (
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
    b"\n\n"
)
_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_BLOCK_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_TRUNCATED = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"del\n\n'


class _Message(msgspec.Struct):
    content: Any = None


class _MessagesRequest(msgspec.Struct):
    model: str = ""
    messages: list[_Message] = msgspec.field(default_factory=list)
    system: Any = None
    max_tokens: int | None = None
    stream: bool | None = None


async def _error(call: Call, status: int, message: str) -> None:
    headers: tuple[tuple[bytes, bytes], ...] = ((b"content-type", b"application/json"),)
    if status == 429:
        headers = (*headers, (b"retry-after", b"1"))
    await call.respond(status, anthropic_error(status, message), headers)


async def _status(call: Call, status: int) -> None:
    await _error(call, status, f"mock: injected status {status}")


async def messages(state: MockState, call: Call, body: bytes) -> None:
    try:
        req = msgspec.json.decode(body, type=_MessagesRequest)
    except msgspec.MsgspecError as e:
        await _error(call, 400, f"Invalid request body: {e}")
        return
    fault = await begin(state, call, req.model, _status)
    if fault is None:
        return
    answers = state.answers
    n = answers.length(req.max_tokens)
    stop = "end_turn" if n == answers.tokens else "max_tokens"
    prompt = count_words(req.system) + sum(4 + count_words(m.content) for m in req.messages)
    msg_id = state.next_id("msg_mock")
    if not req.stream:
        out = _encode(
            {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": req.model,
                "content": [{"type": "text", "text": answers.text_of(n)}],
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": n},
            }
        )
        if fault.kind == "reset-mid":
            await call.respond_partial(out[: len(out) // 2], len(out))
        elif fault.kind == "truncated":
            await call.respond(200, out[: len(out) // 2])
        else:
            await call.respond(200, out)
        return
    start = {
        "type": "message_start",
        "message": {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": 1},
        },
    }
    events = [b"event: message_start\ndata: " + _encode(start) + b"\n\n", _BLOCK_START, _PING]
    if fault.kind in ("reset-mid", "truncated"):
        events.extend(answers.anthropic_deltas[: max(n // 2, 1)])
        if fault.kind == "truncated":
            events.append(_TRUNCATED)
        if await call.stream(events, range(4, len(events)), state.itl_s):
            if fault.kind == "reset-mid":
                raise MockAbort("mock: stream cut before message_stop")
            await call.end()
        return
    events.extend(answers.anthropic_deltas[:n])
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": n},
    }
    events += (_BLOCK_STOP, b"event: message_delta\ndata: " + _encode(delta) + b"\n\n")
    events.append(_MESSAGE_STOP)
    if await call.stream(events, range(4, 3 + n), state.itl_s):
        await call.end()
