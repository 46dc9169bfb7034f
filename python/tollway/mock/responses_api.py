"""The mock's OpenAI Responses API: `POST /v1/responses` (stream and not, function tools) and
`GET /v1/responses/{id}`, in the shapes of OpenAI's API reference (response object, output
items, the streaming event sequence from `response.created` to `response.completed`)."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from tollway.mock.content import (
    TOOL_ARGUMENT_FRAGMENTS,
    TOOL_CALL_TOKENS,
    count_words,
    openai_error,
)
from tollway.mock.exchange import Call, MockAbort
from tollway.mock.openai_api import send_openai_status
from tollway.mock.state import MockState, begin

__all__ = ["create_response", "retrieve_response"]

_encode = msgspec.json.Encoder().encode
# Stored responses kept per mock instance, oldest dropped first.
STORED = 1000


class _Tool(msgspec.Struct):
    type: str = "function"
    name: str = ""


class _Request(msgspec.Struct):
    model: str = ""
    input: Any = None
    instructions: str | None = None
    stream: bool | None = None
    max_output_tokens: int | None = None
    tools: list[_Tool] | None = None
    previous_response_id: str | None = None
    store: bool | None = None


def _input_words(req: _Request) -> int:
    if isinstance(req.input, str):
        return len(req.input.split())
    items = req.input if isinstance(req.input, list) else []
    words = sum(4 + count_words(i.get("content")) for i in items if isinstance(i, dict))
    return words + (len(req.instructions.split()) if req.instructions else 0)


def _reads_tool_result(req: _Request) -> bool:
    items = req.input if isinstance(req.input, list) else []
    last = items[-1] if items else None
    return isinstance(last, dict) and last.get("type") == "function_call_output"


def _response(
    rid: str, req: _Request, status: str, output: list[Any], usage: dict[str, Any] | None
) -> dict[str, Any]:
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "model": req.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "store": req.store is not False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [{"type": "function", "name": t.name} for t in req.tools or ()],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


async def create_response(state: MockState, call: Call, body: bytes) -> None:
    try:
        req = msgspec.json.decode(body, type=_Request)
    except msgspec.MsgspecError as e:
        await call.respond(400, openai_error(400, f"Invalid request body: {e}"))
        return
    if req.input is None and req.previous_response_id is None:
        await call.respond(400, openai_error(400, "Missing required parameter: 'input'."))
        return
    fault = await begin(state, call, req.model, send_openai_status)
    if fault is None:
        return
    answers = state.answers
    tool = req.tools[0].name if req.tools and not _reads_tool_result(req) else ""
    n = TOOL_CALL_TOKENS if tool else answers.length(req.max_output_tokens)
    status = "completed" if tool or n == answers.tokens else "incomplete"
    prompt = _input_words(req)
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": n,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + n,
    }
    rid = state.next_id("resp_mock")
    item_id = state.next_id("fc_mock" if tool else "msg_mock")
    if tool:
        item: dict[str, Any] = {
            "type": "function_call",
            "id": item_id,
            "call_id": "call_mock_1",
            "name": tool,
            "arguments": "".join(TOOL_ARGUMENT_FRAGMENTS),
            "status": "completed",
        }
    else:
        part = {"type": "output_text", "text": answers.text_of(n), "annotations": []}
        item = {
            "type": "message",
            "id": item_id,
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }
    final = _response(rid, req, status, [item], usage)
    if req.store is not False:
        stored = state.responses
        stored[rid] = _encode(final)
        while len(stored) > STORED:
            del stored[next(iter(stored))]
    if not req.stream:
        out = _encode(final)
        if fault.kind == "reset-mid":
            await call.respond_partial(out[: len(out) // 2], len(out))
        else:
            await call.respond(200, out[: len(out) // 2] if fault.kind == "truncated" else out)
        return
    events = _events(req, final, item, [w.decode() for w in _deltas(state, n, tool)])
    if fault.kind in ("reset-mid", "truncated"):
        events = events[: max(len(events) // 2, 1)]
        if await call.stream(events, range(0), state.itl_s):
            if fault.kind == "reset-mid":
                raise MockAbort("mock: stream cut before response.completed")
            await call.end()
        return
    if await call.stream(events, range(4, len(events) - 3), state.itl_s):
        await call.end()


def _deltas(state: MockState, n: int, tool: str) -> list[bytes]:
    if tool:
        return [f.encode() for f in TOOL_ARGUMENT_FRAGMENTS]
    text = state.answers.text_of(n)
    ends = [len(state.answers.text_of(i)) for i in range(n + 1)]
    return [text[ends[i] : ends[i + 1]].encode() for i in range(n)]


def _events(
    req: _Request, final: dict[str, Any], item: dict[str, Any], deltas: list[str]
) -> list[bytes]:
    """The streaming event sequence for one output item, as OpenAI sends it."""
    seq = iter(range(1_000_000))

    def event(kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": next(seq), **fields}
        return b"event: " + kind.encode() + b"\ndata: " + _encode(data) + b"\n\n"

    pending = {**final, "status": "in_progress", "output": [], "usage": None}
    pending["incomplete_details"] = None
    out = [
        event("response.created", response=pending),
        event("response.in_progress", response=pending),
    ]
    iid = item["id"]
    if item["type"] == "function_call":
        out.append(
            event(
                "response.output_item.added",
                output_index=0,
                item={**item, "arguments": "", "status": "in_progress"},
            )
        )
        for d in deltas:
            kind = "response.function_call_arguments.delta"
            out.append(event(kind, item_id=iid, output_index=0, delta=d))
        done = "response.function_call_arguments.done"
        out.append(event(done, item_id=iid, output_index=0, arguments=item["arguments"]))
    else:
        empty = {"type": "output_text", "text": "", "annotations": []}
        started = {**item, "status": "in_progress", "content": []}
        out.append(event("response.output_item.added", output_index=0, item=started))
        where = {"item_id": iid, "output_index": 0, "content_index": 0}
        out.append(event("response.content_part.added", **where, part=empty))
        for d in deltas:
            out.append(event("response.output_text.delta", **where, delta=d, logprobs=[]))
        part = item["content"][0]
        out.append(event("response.output_text.done", **where, text=part["text"], logprobs=[]))
        out.append(event("response.content_part.done", **where, part=part))
    out.append(event("response.output_item.done", output_index=0, item=item))
    terminal = "response.completed" if final["status"] == "completed" else "response.incomplete"
    out.append(event(terminal, response=final))
    return out


async def retrieve_response(state: MockState, call: Call, response_id: str) -> None:
    stored = state.responses.get(response_id)
    if stored is None:
        message = f"Response with id '{response_id}' not found."
        await call.respond(404, openai_error(404, message))
        return
    await call.respond(200, stored)
