"""Google's `generateContent` API (Gemini API and Vertex AI) behind the OpenAI chat and
embeddings APIs: requests, whole answers and errors translated, as pure functions over decoded
JSON. Streams are translated in Rust (`SseMeter("gemini", ...)`).
"""

from __future__ import annotations

import time
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from tollway.providers import (
    TranslationError,
    content_parts,
    float32_base64,
    tool_arguments,
)

__all__ = [
    "finish_reason",
    "from_embeddings",
    "from_error",
    "from_response",
    "to_embeddings_request",
    "to_request",
]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

_CONTENT_FILTER: Final = frozenset(
    ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE")
)
# google.rpc status codes as OpenAI's error `type`.
_ERROR_TYPES: Final = {
    "INVALID_ARGUMENT": "invalid_request_error",
    "FAILED_PRECONDITION": "invalid_request_error",
    "OUT_OF_RANGE": "invalid_request_error",
    "NOT_FOUND": "invalid_request_error",
    "UNAUTHENTICATED": "authentication_error",
    "PERMISSION_DENIED": "permission_error",
    "RESOURCE_EXHAUSTED": "rate_limit_error",
}
_IMAGE_TYPES: Final = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "heic": "image/heic",
    "pdf": "application/pdf",
}
# OpenAI's reasoning_effort as a Gemini thinking budget (tokens).
_THINKING: Final = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}


def finish_reason(reason: str | None, tools: bool) -> str:
    """OpenAI's finish reason for a Gemini `finishReason` (same table as the Rust meter)."""
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _CONTENT_FILTER:
        return "content_filter"
    return "tool_calls" if tools else "stop"


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def _image(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        mime = head[len("data:") :].split(";")[0]
        if not sep or ";base64" not in head or not mime:
            raise TranslationError("image data URLs must be base64: data:<type>;base64,<data>")
        return {"inlineData": {"mimeType": mime, "data": data}}
    if url.startswith(("http://", "https://", "gs://")):
        ext = urlsplit(url).path.rpartition(".")[2].lower()
        return {"fileData": {"mimeType": _IMAGE_TYPES.get(ext, "image/jpeg"), "fileUri": url}}
    raise TranslationError("image_url.url must be an http(s), gs:// or data: URL")


def _parts(content: Any) -> list[dict[str, Any]]:
    return content_parts(content, _image, "Gemini")


def _contents(messages: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """System texts and Gemini contents; tool results are `functionResponse` parts of a user
    turn, named after the call they answer (OpenAI links them by id, Gemini by name)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            if text := _text_of(m.get("content")):
                system.append(text)
            continue
        if role == "user":
            parts = _parts(m.get("content"))
        elif role == "assistant":
            parts = _parts(m.get("content"))
            for call in m.get("tool_calls") or ():
                name = (call.get("function") or {}).get("name") or ""
                names[call.get("id") or ""] = name
                parts.append({"functionCall": {"name": name, "args": tool_arguments(call)}})
            role = "model"
        elif role == "tool":
            text = _text_of(m.get("content"))
            try:
                result = _decode(text) if text else {}
            except msgspec.DecodeError:
                result = text
            name = names.get(m.get("tool_call_id") or "", "")
            response = result if isinstance(result, dict) else {"result": result}
            parts = [{"functionResponse": {"name": name, "response": response}}]
            role = "user"
        else:
            raise TranslationError(f"messages with role {role!r} are not supported by Gemini")
        if not parts:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": role, "parts": parts})
    return system, out


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None or choice == "auto":
        return None
    if choice == "none":
        mode: dict[str, Any] = {"mode": "NONE"}
    elif choice == "required":
        mode = {"mode": "ANY"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        mode = {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name")]}
    else:
        raise TranslationError("tool_choice must be auto, none, required or a function")
    return {"functionCallingConfig": mode}


def _declaration(tool: Any) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or tool.get("type") != "function":
        raise TranslationError("only function tools are supported by Gemini")
    out: dict[str, Any] = {"name": function.get("name")}
    if function.get("description"):
        out["description"] = function["description"]
    if function.get("parameters"):
        out["parametersJsonSchema"] = function["parameters"]
    return out


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for openai_name, name in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ):
        if body.get(openai_name) is not None:
            config[name] = body[openai_name]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema:
            config["responseJsonSchema"] = schema
    effort = body.get("reasoning_effort")
    if effort in _THINKING:
        config["thinkingConfig"] = {"thinkingBudget": _THINKING[effort]}
    return config


def to_request(body: dict[str, Any]) -> dict[str, Any]:
    """The `generateContent` body for an OpenAI chat request."""
    system, contents = _contents(body.get("messages") or [])
    req: dict[str, Any] = {"contents": contents}
    if system:
        req["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    tools = body.get("tools")
    if tools:
        req["tools"] = [{"functionDeclarations": [_declaration(t) for t in tools]}]
        config = _tool_config(body.get("tool_choice"))
        if config is not None:
            req["toolConfig"] = config
    generation = _generation_config(body)
    if generation:
        req["generationConfig"] = generation
    return req


def openai_usage(meta: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage from `usageMetadata`: thinking tokens are completion tokens (billed as
    output), cached tokens are part of the prompt."""
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    thoughts = meta.get("thoughtsTokenCount")
    completion = int(meta.get("candidatesTokenCount") or 0) + int(thoughts or 0)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if meta.get("cachedContentTokenCount") is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": meta["cachedContentTokenCount"]}
    if thoughts is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage


def from_response(body: bytes, model: str) -> bytes:
    """An OpenAI `chat.completion` body for a `generateContent` answer."""
    resp = _decode(body)
    candidates = resp.get("candidates") or []
    candidate: dict[str, Any] = next((c for c in candidates if c.get("index", 0) == 0), {})
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(p.get("text", "") for p in parts if "text" in p and not p.get("thought"))
    calls = [
        {
            "id": p["functionCall"].get("id") or f"call_{i + 1}",
            "type": "function",
            "function": {
                "name": p["functionCall"].get("name"),
                "arguments": _encode(p["functionCall"].get("args") or {}).decode(),
            },
        }
        for i, p in enumerate(q for q in parts if "functionCall" in q)
    ]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    reason = candidate.get("finishReason")
    if not candidates and (resp.get("promptFeedback") or {}).get("blockReason"):
        message["content"], reason = None, "SAFETY"  # the prompt itself was blocked
    return _encode(
        {
            "id": resp.get("responseId") or "chatcmpl-gemini",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason(reason, bool(calls)),
                }
            ],
            "usage": openai_usage(resp.get("usageMetadata") or {}),
        }
    )


def to_embeddings_request(body: dict[str, Any], model_id: str) -> dict[str, Any]:
    """The `batchEmbedContents` body for an OpenAI embeddings request (text inputs only)."""
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise TranslationError("Gemini embeddings take input as a string or a list of strings")
    item: dict[str, Any] = {"model": f"models/{model_id}"}
    if body.get("dimensions"):
        item["outputDimensionality"] = body["dimensions"]
    return {"requests": [{**item, "content": {"parts": [{"text": t}]}} for t in inputs]}


def from_embeddings(body: bytes, model: str, request: dict[str, Any] | None) -> bytes:
    """An OpenAI embeddings list for a `batchEmbedContents` (or Vertex `predict`) answer, as
    floats or base64 as the request asked. Gemini reports no usage: tokens are estimated."""
    resp = _decode(body)
    if "predictions" in resp:  # Vertex text-embedding models
        vectors = [(p.get("embeddings") or {}) for p in resp["predictions"]]
        tokens = sum(int((v.get("statistics") or {}).get("token_count") or 0) for v in vectors)
        values = [v.get("values") or [] for v in vectors]
    else:
        values = [e.get("values") or [] for e in resp.get("embeddings") or []]
        inputs = (request or {}).get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs or []
        tokens = sum(max(1, len(str(t)) // 4) for t in texts)
    as_b64 = (request or {}).get("encoding_format") == "base64"
    data = [
        {"object": "embedding", "index": i, "embedding": float32_base64(v) if as_b64 else v}
        for i, v in enumerate(values)
    ]
    return _encode(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def from_error(status: int, body: bytes) -> bytes:
    """OpenAI's error body for a Google API error answer (the status stays the same)."""
    try:
        decoded = _decode(body)
        if isinstance(decoded, list) and decoded:  # Vertex streams wrap errors in a list
            decoded = decoded[0]
        error = decoded.get("error") if isinstance(decoded, dict) else None
    except msgspec.DecodeError:
        error = None
    error = error if isinstance(error, dict) else {}
    code = str(error.get("status") or "")
    kind = _ERROR_TYPES.get(code, "server_error" if status >= 500 else "invalid_request_error")
    message = str(error.get("message") or f"The provider answered HTTP {status}")
    return _encode(
        {"error": {"message": message, "type": kind, "param": None, "code": code or None}}
    )
