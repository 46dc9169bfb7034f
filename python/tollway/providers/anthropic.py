"""Anthropic's Messages API behind the OpenAI chat API: requests, answers and errors translated.

Streams are translated in Rust (`SseMeter("anthropic", ...)`); this module does the rest, as
pure functions over decoded JSON.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from tollway.providers import Endpoints, ProviderTarget, TranslationError
from tollway.providers.urls import anthropic_messages_url

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_TOKENS",
    "AnthropicProvider",
    "finish_reason",
    "from_anthropic_error",
    "from_anthropic_response",
    "to_anthropic_request",
]

ANTHROPIC_VERSION: Final = "2023-06-01"
DEFAULT_BASE_URL: Final = "https://api.anthropic.com/v1"
# Anthropic requires max_tokens; OpenAI clients usually leave it out.
DEFAULT_MAX_TOKENS: Final = 4096

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

_FINISH: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error types as OpenAI's `type` (OpenAI has fewer kinds).
_ERROR_TYPES: Final = {
    "invalid_request_error": "invalid_request_error",
    "not_found_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "rate_limit_error": "rate_limit_error",
    "api_error": "server_error",
    "overloaded_error": "server_error",
}


def finish_reason(stop_reason: str | None) -> str | None:
    """OpenAI's `finish_reason` for an Anthropic `stop_reason` (same table as the Rust meter)."""
    if stop_reason is None:
        return None
    return _FINISH.get(stop_reason, "stop")


def _text_of(content: Any) -> str:
    """The text of an OpenAI message content: a string or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def _image(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        media_type = head[len("data:") :].split(";")[0]
        if not sep or ";base64" not in head or not media_type:
            raise TranslationError("image data URLs must be base64: data:<type>;base64,<data>")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError("image_url.url must be an http(s) or data: URL")


def _blocks(content: Any) -> list[dict[str, Any]]:
    """Anthropic content blocks for an OpenAI message content; empty text is dropped because
    Anthropic refuses empty text blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise TranslationError("image_url parts need a url")
            blocks.append(_image(url))
        else:
            raise TranslationError(f"content parts of type {kind!r} are not supported by Anthropic")
    return blocks


def _tool_use(call: Any) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        tool_input = _decode(arguments)
    except msgspec.DecodeError:
        raise TranslationError("tool_calls[].function.arguments must be a JSON object") from None
    if not isinstance(tool_input, dict):
        raise TranslationError("tool_calls[].function.arguments must be a JSON object")
    return {
        "type": "tool_use",
        "id": call.get("id"),
        "name": function.get("name"),
        "input": tool_input,
    }


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        out: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise TranslationError("tool_choice must be auto, none, required or a function")
    if out is not None and parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _messages(openai_messages: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """System texts and Anthropic messages; consecutive messages of one role are merged, as
    Anthropic requires alternating roles (tool results travel in user messages)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for m in openai_messages:
        role = m.get("role")
        if role in ("system", "developer"):
            if text := _text_of(m.get("content")):
                system.append(text)
            continue
        if role == "user":
            blocks = _blocks(m.get("content"))
        elif role == "assistant":
            blocks = _blocks(m.get("content"))
            blocks += [_tool_use(c) for c in m.get("tool_calls") or ()]
        elif role == "tool":
            result = _blocks(m.get("content"))
            blocks = [
                {"type": "tool_result", "tool_use_id": m.get("tool_call_id"), "content": result}
            ]
            role = "user"
        else:
            raise TranslationError(f"messages with role {role!r} are not supported by Anthropic")
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def to_anthropic_request(openai_body: dict[str, Any], model_id: str) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat request."""
    system, messages = _messages(openai_body.get("messages") or [])
    max_tokens = openai_body.get("max_completion_tokens") or openai_body.get("max_tokens")
    req: dict[str, Any] = {
        "model": model_id,
        "messages": messages,
        "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
    }
    if system:
        req["system"] = "\n\n".join(system)
    stop = openai_body.get("stop")
    if stop:
        req["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    temperature = openai_body.get("temperature")
    if temperature is not None:
        # OpenAI's range is 0..2, Anthropic's 0..1.
        req["temperature"] = min(float(temperature), 1.0)
    if openai_body.get("top_p") is not None:
        req["top_p"] = openai_body["top_p"]
    if openai_body.get("stream"):
        req["stream"] = True
    if isinstance(openai_body.get("user"), str):
        req["metadata"] = {"user_id": openai_body["user"]}
    tools = openai_body.get("tools")
    if tools:
        req["tools"] = [_tool(t) for t in tools]
    choice = _tool_choice(openai_body.get("tool_choice"), openai_body.get("parallel_tool_calls"))
    if choice is not None and tools:
        req["tool_choice"] = choice
    return req


def _tool(tool: Any) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or tool.get("type") != "function":
        raise TranslationError("only function tools are supported by Anthropic")
    out: dict[str, Any] = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class _Message(msgspec.Struct):
    id: str = ""
    content: list[dict[str, Any]] = msgspec.field(default_factory=list)
    stop_reason: str | None = None
    usage: _Usage = msgspec.field(default_factory=_Usage)


def openai_usage(
    input_tokens: int, output_tokens: int, cache_read: int | None, cache_creation: int | None
) -> dict[str, Any]:
    """OpenAI usage from Anthropic's: prompt tokens include cache reads and writes, which
    Anthropic counts apart."""
    prompt = input_tokens + (cache_read or 0) + (cache_creation or 0)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": output_tokens,
        "total_tokens": prompt + output_tokens,
    }
    if cache_read is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cache_read}
    return usage


def from_anthropic_response(body: bytes, model: str) -> bytes:
    """An OpenAI `chat.completion` body for a Messages API answer."""
    msg = _decode(body, type=_Message)
    text = "".join(b.get("text", "") for b in msg.content if b.get("type") == "text")
    calls = [
        {
            "id": b.get("id"),
            "type": "function",
            "function": {"name": b.get("name"), "arguments": _encode(b.get("input", {})).decode()},
        }
        for b in msg.content
        if b.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    u = msg.usage
    return _encode(
        {
            "id": msg.id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason(msg.stop_reason) or "stop",
                }
            ],
            "usage": openai_usage(
                u.input_tokens,
                u.output_tokens,
                u.cache_read_input_tokens,
                u.cache_creation_input_tokens,
            ),
        }
    )


class _ErrorDetail(msgspec.Struct):
    type: str = "api_error"
    message: str = ""


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail = msgspec.field(default_factory=_ErrorDetail)


def from_anthropic_error(status: int, body: bytes) -> bytes:
    """OpenAI's error body for an Anthropic error answer (the status stays the same)."""
    try:
        detail = _decode(body, type=_ErrorBody).error
    except msgspec.DecodeError:
        detail = _ErrorDetail(message="")
    kind = _ERROR_TYPES.get(
        detail.type, "server_error" if status >= 500 else "invalid_request_error"
    )
    message = detail.message or f"The provider answered HTTP {status}"
    return _encode(
        {"error": {"message": message, "type": kind, "param": None, "code": detail.type}}
    )


@dataclass(frozen=True, slots=True)
class AnthropicProvider:
    name: str = "anthropic"
    stream_format: Literal["anthropic"] = "anthropic"

    def endpoints(self, target: ProviderTarget) -> Endpoints:
        url = anthropic_messages_url(target.base_url or DEFAULT_BASE_URL)
        headers = {
            "content-type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
            **dict(target.headers),
        }
        if target.api_key:
            headers["x-api-key"] = target.api_key
        return Endpoints(url, None, headers)

    def request_body(self, openai_body: dict[str, Any], model_id: str) -> bytes:
        return _encode(to_anthropic_request(openai_body, model_id))

    def response_body(self, status: int, body: bytes, model: str) -> bytes:
        if 200 <= status < 300:
            return from_anthropic_response(body, model)
        return from_anthropic_error(status, body)
