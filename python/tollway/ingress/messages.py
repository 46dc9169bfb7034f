"""Anthropic Messages bodies as the gateway's chat path reads them, and back.

A `/v1/messages` request is translated once into an OpenAI chat request: that is what
admission, guardrails, limits and OpenAI-shaped targets see. Blocks the chat API cannot carry
(documents, thinking, server tools) are dropped from that translation and named in `lossy`:
such a request may still go to an Anthropic target, which gets the client's own body.
Answers from OpenAI-shaped targets are translated back (`to_message`, `to_error`).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from tollway.errors import GatewayError

__all__ = ["ERROR_TYPES", "to_chat_request", "to_error", "to_message", "validate_messages"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Anthropic's error type for each HTTP status the gateway answers with.
ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def decode_with_model(body: bytes) -> dict[str, Any]:
    """A client API's request body: a JSON object with a non-empty `model`, or a 400 naming
    what is wrong (the Messages and Responses ingresses share it)."""
    try:
        req = _decode(body)
    except msgspec.DecodeError as e:
        raise GatewayError.bad_request(f"The request body is not valid JSON: {e}") from None
    if type(req) is not dict:
        raise GatewayError.bad_request("The request body must be a JSON object")
    model = req.get("model")
    if type(model) is not str or not model:
        what = "is required" if model is None else "must be a non-empty string"
        raise GatewayError.bad_request(f"'model' {what}", "model")
    return req


def validate_messages(body: bytes, needs_max_tokens: bool = True) -> dict[str, Any]:
    """The decoded Messages request, or a 400 naming the field that is wrong."""
    req = decode_with_model(body)
    messages = req.get("messages")
    if type(messages) is not list or not messages:
        what = "is required" if messages is None else "must be a non-empty list"
        raise GatewayError.bad_request(f"'messages' {what}", "messages")
    max_tokens = req.get("max_tokens")
    if needs_max_tokens and (type(max_tokens) is not int or max_tokens < 1):
        what = "is required" if max_tokens is None else "must be a positive integer"
        raise GatewayError.bad_request(f"'max_tokens' {what}", "max_tokens")
    stream = req.get("stream")
    if stream is not None and type(stream) is not bool:
        raise GatewayError.bad_request("'stream' must be true or false", "stream")
    for i, m in enumerate(messages):
        if type(m) is not dict or m.get("role") not in ("user", "assistant"):
            raise GatewayError.bad_request(
                f"messages[{i}].role must be 'user' or 'assistant'", f"messages[{i}].role"
            )
        content = m.get("content")
        if type(content) is not str and type(content) is not list:
            raise GatewayError.bad_request(
                f"messages[{i}].content must be a string or a list of blocks",
                f"messages[{i}].content",
            )
    return req


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def _image(block: dict[str, Any]) -> dict[str, Any] | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = source.get("url", "")
    else:
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _convert(m: dict[str, Any], lossy: list[str]) -> list[dict[str, Any]]:
    """OpenAI messages for one Anthropic message (tool results become `tool` messages)."""
    role = m["role"]
    content = m["content"]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image" and (image := _image(block)) is not None:
            parts.append(image)
        elif kind == "tool_use":
            arguments = _encode(block.get("input") or {}).decode()
            call = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": call})
        elif kind == "tool_result":
            text = _text(block.get("content"))
            tools.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the model's own notes: nothing to carry to another model
        else:
            lossy.append(str(kind))
    out: list[dict[str, Any]] = list(tools)
    if role == "assistant":
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        if text or calls:
            msg: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
    elif parts:
        plain = all(p["type"] == "text" for p in parts)
        out.append({"role": role, "content": "".join(p["text"] for p in parts) if plain else parts})
    return out


def _tool(tool: Any, lossy: list[str]) -> dict[str, Any] | None:
    if not isinstance(tool, dict) or "input_schema" not in tool:
        lossy.append(str(tool.get("type") if isinstance(tool, dict) else tool))
        return None
    function: dict[str, Any] = {"name": tool.get("name"), "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "any":
        return "required"
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return "none" if kind == "none" else "auto"


def to_chat_request(req: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The OpenAI chat request for a validated Messages request, and the kinds of what could
    not be carried over (empty when the translation is faithful)."""
    lossy: list[str] = []
    messages: list[dict[str, Any]] = []
    system = req.get("system")
    if system:
        messages.append({"role": "system", "content": _text(system)})
    for m in req["messages"]:
        messages.extend(_convert(m, lossy))
    out: dict[str, Any] = {"model": req["model"], "messages": messages}
    for name in ("max_tokens", "temperature", "top_p", "stream"):
        if req.get(name) is not None:
            out[name] = req[name]
    if req.get("stop_sequences"):
        out["stop"] = req["stop_sequences"]
    metadata = req.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    if req.get("tools"):
        tools = [t for t in (_tool(t, lossy) for t in req["tools"]) if t is not None]
        if tools:
            out["tools"] = tools
            choice = req.get("tool_choice")
            if choice is not None:
                out["tool_choice"] = _tool_choice(choice)
                if isinstance(choice, dict) and choice.get("disable_parallel_tool_use"):
                    out["parallel_tool_calls"] = False
    if req.get("thinking") is not None:
        lossy.append("thinking")
    return out, lossy


class _Function(msgspec.Struct):
    name: str = ""
    arguments: str = ""


class _Call(msgspec.Struct):
    id: str = ""
    function: _Function = msgspec.field(default_factory=_Function)


class _Message(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_Call] | None = None


class _Choice(msgspec.Struct):
    message: _Message = msgspec.field(default_factory=_Message)
    finish_reason: str | None = None


class _Details(msgspec.Struct):
    cached_tokens: int = 0


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _Details | None = None
    cache_creation_input_tokens: int = 0


class _Completion(msgspec.Struct):
    id: str = ""
    choices: list[_Choice] = []
    usage: _Usage = msgspec.field(default_factory=_Usage)


def usage_of(prompt: int, cached: int, written: int, output: int) -> dict[str, int]:
    """Anthropic usage: input tokens exclude cache reads and writes, which it counts apart."""
    return {
        "input_tokens": max(prompt - cached - written, 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": output,
    }


def to_message(body: bytes, model: str) -> bytes:
    """An Anthropic `message` for an OpenAI `chat.completion` body."""
    answer = msgspec.json.decode(body, type=_Completion)
    choice = answer.choices[0] if answer.choices else _Choice()
    content: list[dict[str, Any]] = []
    text = choice.message.content or choice.message.refusal
    if text:
        content.append({"type": "text", "text": text})
    for call in choice.message.tool_calls or ():
        try:
            tool_input = _decode(call.function.arguments or "{}")
        except msgspec.DecodeError:
            tool_input = {}
        content.append(
            {"type": "tool_use", "id": call.id, "name": call.function.name, "input": tool_input}
        )
    u = answer.usage
    cached = u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else 0
    msg_id = answer.id if answer.id.startswith("msg_") else f"msg_{answer.id}"
    return _encode(
        {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": STOP_REASONS.get(choice.finish_reason or "stop", "end_turn"),
            "stop_sequence": None,
            "usage": usage_of(
                u.prompt_tokens, cached, u.cache_creation_input_tokens, u.completion_tokens
            ),
        }
    )


class _ErrorDetail(msgspec.Struct):
    message: str = ""


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail = msgspec.field(default_factory=_ErrorDetail)


def to_error(status: int, body: bytes) -> bytes:
    """Anthropic's error body for the gateway's OpenAI-shaped one."""
    try:
        message = msgspec.json.decode(body, type=_ErrorBody).error.message
    except msgspec.DecodeError:
        message = ""
    kind = ERROR_TYPES.get(status, "api_error")
    error = {"type": kind, "message": message or f"HTTP {status}"}
    return _encode({"type": "error", "error": error})
