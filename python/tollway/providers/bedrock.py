"""AWS Bedrock's Converse API (`provider: bedrock`) behind the OpenAI chat API, for any Bedrock
chat model: requests, whole answers and errors translated here; ConverseStream's binary event
stream is decoded and translated in Rust (`SseMeter("bedrock", ...)`); embeddings go through
InvokeModel (`tollway.providers.bedrock_embed`). Requests are SigV4-signed per call
(`tollway.providers.aws`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import quote

import msgspec
from yarl import URL

from tollway.providers import (
    CloudTarget,
    Endpoints,
    TranslationError,
    content_parts,
    tool_arguments,
)
from tollway.providers.aws import AwsCredentials, SigV4Auth, default_region
from tollway.providers.bedrock_embed import from_invoke, to_invoke
from tollway.providers.gemini import is_embeddings

__all__ = ["JSON_TOOL", "BedrockProvider", "from_converse", "from_error", "to_converse"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

_FINISH: Final = {
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# Bedrock's errors by HTTP status: OpenAI's `type` and the exception name as `code`.
_ERRORS: Final = {
    400: ("invalid_request_error", "ValidationException"),
    403: ("permission_error", "AccessDeniedException"),
    404: ("invalid_request_error", "ResourceNotFoundException"),
    408: ("server_error", "ModelTimeoutException"),
    424: ("server_error", "ModelErrorException"),
    429: ("rate_limit_error", "ThrottlingException"),
    500: ("server_error", "InternalServerException"),
    503: ("server_error", "ServiceUnavailableException"),
}
_IMAGE_FORMATS: Final = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif"}
# JSON mode (`response_format`) is a tool the model must call, whose input is the answer: the
# Rust stream translator knows the name too (`sse::bedrock::JSON_TOOL`).
JSON_TOOL: Final = "tollway_json_answer"


def finish_reason(stop_reason: str | None) -> str:
    """OpenAI's finish reason for a Converse `stopReason` (same table as the Rust meter)."""
    return _FINISH.get(stop_reason or "", "stop")


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def _image(url: str) -> dict[str, Any]:
    head, sep, data = url.partition(",")
    mime = head[len("data:") :].split(";")[0] if url.startswith("data:") else ""
    if not sep or ";base64" not in head or not mime:
        raise TranslationError("Bedrock takes images as base64 data URLs only")
    fmt = _IMAGE_FORMATS.get(mime, mime.removeprefix("image/"))
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    return content_parts(content, _image, "Bedrock")


def _tool_use(call: Any) -> dict[str, Any]:
    args = tool_arguments(call)
    return {
        "toolUse": {
            "toolUseId": call.get("id"),
            "name": (call.get("function") or {}).get("name"),
            "input": args,
        }
    }


def _messages(openai_messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System blocks and Converse messages; one role's consecutive messages merge, as Converse
    needs alternating roles (tool results travel in user messages)."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for m in openai_messages:
        role = m.get("role")
        if role in ("system", "developer"):
            if text := _text_of(m.get("content")):
                system.append({"text": text})
            continue
        if role == "user":
            blocks = _blocks(m.get("content"))
        elif role == "assistant":
            blocks = _blocks(m.get("content")) + [_tool_use(c) for c in m.get("tool_calls") or ()]
        elif role == "tool":
            text = _text_of(m.get("content"))
            result = {"toolUseId": m.get("tool_call_id"), "content": [{"text": text or " "}]}
            blocks, role = [{"toolResult": result}], "user"
        else:
            raise TranslationError(f"messages with role {role!r} are not supported by Bedrock")
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def _json_tool(response_format: Any) -> dict[str, Any] | None:
    """The JSON-mode tool for a `response_format`, or None for text answers."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        schema: Any = {"type": "object"}
        about = "Give your whole answer as this tool's input: a JSON object."
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise TranslationError("response_format.json_schema.schema must be a JSON schema")
        schema = spec["schema"]
        about = f"Give your whole answer as this tool's input: a {spec.get('name') or 'JSON'}"
        about += f" object. {spec['description']}" if spec.get("description") else " object."
    else:
        return None
    return {"toolSpec": {"name": JSON_TOOL, "description": about, "inputSchema": {"json": schema}}}


def _tool_config(tools: list[Any], choice: Any) -> dict[str, Any] | None:
    specs = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            raise TranslationError("only function tools are supported by Bedrock")
        spec: dict[str, Any] = {
            "name": function.get("name"),
            "inputSchema": {"json": function.get("parameters") or {"type": "object"}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        config["toolChoice"] = {"tool": {"name": choice["function"].get("name")}}
    elif choice not in (None, "auto", "none"):
        raise TranslationError("tool_choice must be auto, none, required or a function")
    return config


def to_converse(body: dict[str, Any]) -> dict[str, Any]:
    """The Converse body for an OpenAI chat request (the model is in the URL)."""
    system, messages = _messages(body.get("messages") or [])
    req: dict[str, Any] = {"messages": messages}
    if system:
        req["system"] = system
    inference: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        inference["maxTokens"] = max_tokens
    if body.get("temperature") is not None:
        inference["temperature"] = min(float(body["temperature"]), 1.0)
    if body.get("top_p") is not None:
        inference["topP"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        inference["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if inference:
        req["inferenceConfig"] = inference
    tools = body.get("tools")
    json_tool = _json_tool(body.get("response_format"))
    if tools and body.get("tool_choice") != "none":
        config = req["toolConfig"] = _tool_config(tools, body.get("tool_choice"))
        if json_tool is not None and config is not None:
            # The client's tools or the answer: some tool, unless the client named one.
            config["tools"].append(json_tool)
            config.setdefault("toolChoice", {"any": {}})
    elif json_tool is not None:
        req["toolConfig"] = {"tools": [json_tool], "toolChoice": {"tool": {"name": JSON_TOOL}}}
    elif used := _tools_in(messages):
        # Converse refuses toolUse/toolResult blocks without a toolConfig: declare the tools
        # the history used (the client sent no schemas, so any object).
        req["toolConfig"] = {
            "tools": [{"toolSpec": {"name": n, "inputSchema": {"json": {"type": "object"}}}}
                      for n in used]
        }  # fmt: skip
    return req


def _tools_in(messages: list[dict[str, Any]]) -> list[str]:
    names = [
        b["toolUse"]["name"]
        for m in messages
        for b in m["content"]
        if isinstance(b.get("toolUse"), dict) and b["toolUse"].get("name")
    ]
    return list(dict.fromkeys(names))


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage from Converse's: prompt tokens include cache reads and writes, which
    Bedrock counts apart; writes are also named (`cache_creation_input_tokens`, as for
    Anthropic targets) so they are priced at the cache-write rate."""
    cached = usage.get("cacheReadInputTokens")
    written = int(usage.get("cacheWriteInputTokens") or 0)
    prompt = int(usage.get("inputTokens") or 0) + int(cached or 0) + written
    completion = int(usage.get("outputTokens") or 0)
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    if written:
        out["cache_creation_input_tokens"] = written
    return out


def from_converse(body: bytes, model: str) -> bytes:
    """An OpenAI `chat.completion` body for a Converse answer."""
    resp = _decode(body)
    content = ((resp.get("output") or {}).get("message") or {}).get("content") or []
    text = "".join(b["text"] for b in content if isinstance(b.get("text"), str))
    answers = [b for b in content if (b.get("toolUse") or {}).get("name") == JSON_TOOL]
    if answers:  # JSON mode: the tool's input is the answer
        text = _encode(answers[0]["toolUse"].get("input") or {}).decode()
        content = [b for b in content if b not in answers]
    calls = [
        {
            "id": b["toolUse"].get("toolUseId"),
            "type": "function",
            "function": {
                "name": b["toolUse"].get("name"),
                "arguments": _encode(b["toolUse"].get("input") or {}).decode(),
            },
        }
        for b in content
        if isinstance(b.get("toolUse"), dict)
    ]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return _encode(
        {
            "id": resp.get("requestId") or f"chatcmpl-bedrock-{time.time_ns():x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "stop"
                    if answers and not calls
                    else finish_reason(resp.get("stopReason")),
                }
            ],
            "usage": openai_usage(resp.get("usage") or {}),
        }
    )


def from_error(status: int, body: bytes) -> bytes:
    """OpenAI's error body for a Bedrock error answer (the status stays the same; throttling is
    a 429, which the gateway retries)."""
    try:
        decoded = _decode(body)
    except msgspec.DecodeError:
        decoded = None
    message = (
        decoded.get("message") or decoded.get("Message") if isinstance(decoded, dict) else None
    )
    kind, code = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    text = str(message or f"The provider answered HTTP {status}")
    return _encode({"error": {"message": text, "type": kind, "param": None, "code": code}})


@dataclass(frozen=True, slots=True)
class BedrockProvider:
    name: str = "bedrock"
    stream_format: Literal["bedrock"] = "bedrock"

    def endpoints(self, target: CloudTarget) -> Endpoints:
        region = target.region or default_region(target.aws_profile)
        base = (target.base_url or f"https://bedrock-runtime.{region}.amazonaws.com").rstrip("/")
        # As aiohttp will send it (yarl requotes: `%3A` goes out as `:`), so that what is
        # signed is what AWS sees.
        model = str(URL(f"{base}/model/{quote(target.model_id, safe='')}"))
        creds = None
        if target.aws_access_key_id and target.aws_secret_access_key:
            creds = AwsCredentials(
                target.aws_access_key_id, target.aws_secret_access_key, target.aws_session_token
            )
        auth = SigV4Auth(target, region, "bedrock", creds)
        headers = {"content-type": "application/json", **dict(target.headers)}
        return Endpoints(
            f"{model}/converse",
            f"{model}/invoke",
            headers,
            stream_url=f"{model}/converse-stream",
            auth=auth,
        )

    def request_body(self, openai_body: dict[str, Any], model_id: str) -> bytes:
        if is_embeddings(openai_body):
            return to_invoke(openai_body, model_id)  # embeddings (InvokeModel)
        return _encode(to_converse(openai_body))

    def response_body(
        self, status: int, body: bytes, model: str, request: dict[str, Any] | None = None
    ) -> bytes:
        if 200 <= status < 300:
            if request is not None and is_embeddings(request):
                return from_invoke(body, model, request)
            return from_converse(body, model)
        return from_error(status, body)
