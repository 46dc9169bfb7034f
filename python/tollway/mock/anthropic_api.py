"""The Anthropic side of the mock: the Messages API, stream and not, with the same faults."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from tollway.mock.content import (
    TOOL_ARGUMENT_FRAGMENTS,
    TOOL_ARGUMENTS,
    TOOL_CALL_TOKENS,
    anthropic_error,
    count_words,
)
from tollway.mock.exchange import Call, MockAbort
from tollway.mock.state import Fault, MockState, begin

__all__ = ["messages"]

_encode = msgspec.json.Encoder().encode
_TOOL_USE_ID = "toolu_mock_1"

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
    role: str = ""
    content: Any = None


class _Tool(msgspec.Struct):
    name: str = ""


class _MessagesRequest(msgspec.Struct):
    model: str = ""
    messages: list[_Message] = msgspec.field(default_factory=list)
    system: Any = None
    max_tokens: int | None = None
    stream: bool | None = None
    tools: list[_Tool] | None = None


def _is_tool_result(m: _Message) -> bool:
    """True for the user turn that carries tool results back to the model."""
    return (
        m.role == "user"
        and isinstance(m.content, list)
        and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in m.content)
    )


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
    # A model offered tools calls one, unless it is reading that call's result.
    tool = req.tools[0].name if req.tools else None
    if tool is not None and req.messages and _is_tool_result(req.messages[-1]):
        tool = None
    answers = state.answers
    n = TOOL_CALL_TOKENS if tool is not None else answers.length(req.max_tokens)
    stop = "tool_use" if tool is not None else "end_turn" if n == answers.tokens else "max_tokens"
    prompt = count_words(req.system) + sum(4 + count_words(m.content) for m in req.messages)
    msg_id = state.next_id("msg_mock")
    if not req.stream:
        if tool is not None:
            block = {"type": "tool_use", "id": _TOOL_USE_ID, "name": tool, "input": TOOL_ARGUMENTS}
        else:
            block = {"type": "text", "text": answers.text_of(n)}
        out = _encode(
            {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": req.model,
                "content": [block],
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
    opening = _event("message_start", start)
    if tool is None:
        await _stream(state, call, fault, opening, _BLOCK_START, answers.anthropic_deltas[:n], stop)
    else:
        block_start, deltas = _tool_use_events(tool)
        await _stream(state, call, fault, opening, block_start, deltas, stop)


def _tool_use_events(name: str) -> tuple[bytes, tuple[bytes, ...]]:
    """The `content_block_start` of a tool call (empty input) and one `input_json_delta` per
    argument fragment, the shape Anthropic streams tool input in."""
    block = {"type": "tool_use", "id": _TOOL_USE_ID, "name": name, "input": {}}
    start = {"type": "content_block_start", "index": 0, "content_block": block}
    deltas = tuple(
        _event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": fragment},
            },
        )
        for fragment in TOOL_ARGUMENT_FRAGMENTS
    )
    return _event("content_block_start", start), deltas


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode(data) + b"\n\n"


async def _stream(
    state: MockState,
    call: Call,
    fault: Fault,
    opening: bytes,
    block_start: bytes,
    deltas: Sequence[bytes],
    stop: str,
) -> None:
    """Streams one content block of `deltas` (each one token) between `message_start` and
    `message_stop`; reset-mid and truncated cut it halfway."""
    events = [opening, block_start, _PING]
    n = len(deltas)
    if fault.kind in ("reset-mid", "truncated"):
        events.extend(deltas[: max(n // 2, 1)])
        if fault.kind == "truncated":
            events.append(_TRUNCATED)
        if await call.stream(events, range(4, len(events)), state.itl_s):
            if fault.kind == "reset-mid":
                raise MockAbort("mock: stream cut before message_stop")
            await call.end()
        return
    events.extend(deltas)
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": n},
    }
    events += (_BLOCK_STOP, _event("message_delta", delta))
    events.append(_MESSAGE_STOP)
    if await call.stream(events, range(4, 3 + n), state.itl_s):
        await call.end()
