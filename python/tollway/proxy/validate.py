"""The validate phase: the client's body decoded once and checked, or a 400 naming the field.

Hostile shapes end here as 400s, never as a 500 or a provider call: JSON nested beyond the
decoder's depth, bytes that are not UTF-8, `messages` items that are not objects, a
`stream_options` that is not an object of a streamed request, and any field that would let a
client choose the upstream host or credentials, at the top level or below it where an
OpenAI-compatible upstream (another proxy) may read it (`extra_body`, `litellm_params`, ...). JSON
Schemas the client sends (tool parameters, `response_format`) are data, not options: a
property named `base_url` there passes untouched.
"""

from __future__ import annotations

from typing import Any, Literal, NoReturn

import msgspec

from tollway.errors import GatewayError

__all__ = ["FORBIDDEN_FIELDS", "Endpoint", "validate_request"]

Endpoint = Literal["chat", "embeddings"]

# Fields that would let a client pick the upstream host or credentials (the SSRF class of
# LLM-gateway CVEs). They are refused wherever a provider or proxy would read them.
FORBIDDEN_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "azure_endpoint",
        "azure_ad_token",
        "custom_llm_provider",
        "extra_headers",
        "headers",
        "organization",
        "url",
        # Cloud endpoints and credentials that LiteLLM-style proxies read from a body.
        "aws_access_key_id",
        "aws_bedrock_runtime_endpoint",
        "aws_region_name",
        "aws_secret_access_key",
        "aws_session_token",
        "vertex_credentials",
        "vertex_location",
        "vertex_project",
    }
)

# Top-level fields holding content or client data, not options: never searched for forbidden
# names (`metadata` is OpenAI's map of the client's own strings, e.g. {"url": "..."}).
_CONTENT = frozenset({"messages", "input", "prompt", "prediction", "metadata"})
# Paths ("*" = any list item) below which a value is a JSON Schema or other client data.
_SCHEMAS = frozenset(
    {
        ("tools", "*", "function", "parameters"),
        ("tools", "*", "input_schema"),
        ("functions", "*", "parameters"),
        ("response_format", "json_schema", "schema"),
    }
)
# The longest path in `_SCHEMAS`: deeper than that no path can be a schema path any more.
_SCHEMA_DEPTH = max(len(p) for p in _SCHEMAS)

_decode = msgspec.json.Decoder().decode


def validate_request(body: bytes, endpoint: Endpoint) -> dict[str, Any]:
    """The decoded request, or a 400 naming the field that is wrong."""
    try:
        req = _decode(body)
    except msgspec.DecodeError as e:
        raise GatewayError.bad_request(f"The request body is not valid JSON: {e}") from None
    except RecursionError:
        raise GatewayError.bad_request("The request body is nested too deeply") from None
    except UnicodeDecodeError as e:
        raise GatewayError.bad_request(
            f"The request body is not valid UTF-8 (byte {e.start})"
        ) from None
    if type(req) is not dict:
        raise GatewayError.bad_request("The request body must be a JSON object")
    try:
        _check_fields(req)
    except RecursionError:
        raise GatewayError.bad_request("The request body is nested too deeply") from None
    model = req.get("model")
    if type(model) is not str or not model:
        what = "is required" if model is None else "must be a non-empty string"
        raise GatewayError.bad_request(f"'model' {what}", "model")
    if endpoint == "chat":
        _check_chat(req)
    elif req.get("input") is None:
        raise GatewayError.bad_request("'input' is required", "input")
    return req


def _check_fields(req: dict[str, Any]) -> None:
    """Refuses a forbidden field at the top level or below it, outside content and schemas."""
    if not FORBIDDEN_FIELDS.isdisjoint(req):
        _refuse(sorted(FORBIDDEN_FIELDS.intersection(req))[0])
    for name, value in req.items():
        t = type(value)
        if (t is dict or t is list) and name not in _CONTENT and not _clean_field(name, value):
            _check_nested(name, value)


def _check_chat(req: dict[str, Any]) -> None:
    messages = req.get("messages")
    if type(messages) is not list or not messages:
        what = "is required" if messages is None else "must be a non-empty list"
        raise GatewayError.bad_request(f"'messages' {what}", "messages")
    for m in messages:
        if type(m) is not dict or type(m.get("role")) is not str:
            _bad_message(messages)
    stream = req.get("stream")
    if stream is not None and type(stream) is not bool:
        raise GatewayError.bad_request("'stream' must be true or false", "stream")
    options = req.get("stream_options")
    if options is not None:
        if type(options) is not dict:
            raise GatewayError.bad_request("'stream_options' must be an object", "stream_options")
        if stream is not True:
            raise GatewayError.bad_request(
                "'stream_options' is only allowed when 'stream' is true", "stream_options"
            )
        usage = options.get("include_usage")
        if usage is not None and type(usage) is not bool:
            raise GatewayError.bad_request(
                "'stream_options.include_usage' must be true or false",
                "stream_options.include_usage",
            )


def _bad_message(messages: list[Any]) -> NoReturn:
    for i, m in enumerate(messages):
        if type(m) is not dict:
            raise GatewayError.bad_request(
                f"'messages[{i}]' must be an object with a 'role'", f"messages[{i}]"
            )
        if type(m.get("role")) is not str:
            raise GatewayError.bad_request(
                f"'messages[{i}].role' must be a string", f"messages[{i}].role"
            )
    raise AssertionError("no bad message")


def _clean_field(name: str, value: dict[str, Any] | list[Any]) -> bool:
    """False when a forbidden field is below the top-level field `name` outside the JSON
    Schemas of `_SCHEMAS` (the fast check of every request; `_check_nested` names it)."""
    if name == "tools" or name == "functions":
        if type(value) is not list:
            return _clean(value)
        tools = name == "tools"
        for item in value:
            if type(item) is not dict:
                if not _clean(item):
                    return False
            elif not _clean_except(item, "input_schema" if tools else "parameters"):
                return False
        return True
    if name == "response_format" and type(value) is dict:
        return _clean_except(value, None)
    return _clean(value)


def _clean_except(d: dict[str, Any], schema: str | None) -> bool:
    """`_clean` of a tool (or response format) object, skipping its `schema` member; a tool's
    `function` (a format's `json_schema`) is searched skipping `parameters` (`schema`)."""
    if not FORBIDDEN_FIELDS.isdisjoint(d):
        return False
    for k, v in d.items():
        t = type(v)
        if (t is not dict and t is not list) or k == schema:
            continue
        if (k == "function" or k == "json_schema") and t is dict:
            if not FORBIDDEN_FIELDS.isdisjoint(v):
                return False
            inner = "parameters" if k == "function" else "schema"
            for k2, v2 in v.items():
                if k2 != inner and not _clean(v2):
                    return False
        elif not _clean(v):
            return False
    return True


def _clean(value: Any) -> bool:
    """No forbidden field anywhere in `value` (recursive: the decoder bounds the depth, and
    the caller turns a RecursionError into a 400)."""
    t = type(value)
    if t is dict:
        if not FORBIDDEN_FIELDS.isdisjoint(value):
            return False
        value = value.values()
    elif t is not list:
        return True
    for child in value:
        t = type(child)
        if (t is dict or t is list) and not _clean(child):
            return False
    return True


def _check_nested(name: str, value: dict[str, Any] | list[Any]) -> None:
    """Refuses the forbidden field `_clean_field` found below the top-level field `name`,
    naming its path (the slow path, only for requests being refused)."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((name,), value)]
    while stack:
        path, v = stack.pop()
        if type(v) is dict:
            if not FORBIDDEN_FIELDS.isdisjoint(v):
                _refuse(_dotted((*path, sorted(FORBIDDEN_FIELDS.intersection(v))[0])))
            for k, child in v.items():
                t = type(child)
                if t is dict or t is list:
                    sub = (*path, k)
                    if len(sub) > _SCHEMA_DEPTH or _shape(sub) not in _SCHEMAS:
                        stack.append((sub, child))
        else:
            for i, child in enumerate(v):
                t = type(child)
                if t is dict or t is list:
                    stack.append(((*path, i), child))


def _shape(path: tuple[str | int, ...]) -> tuple[str, ...]:
    """`path` with list indexes as "*", to compare with `_SCHEMAS`."""
    return tuple("*" if type(p) is int else p for p in path)  # type: ignore[misc]


def _dotted(path: tuple[str | int, ...]) -> str:
    """`extra_body.api_base`, `tools[0].function.url`: a path as an error's `param`."""
    out = ""
    for p in path:
        out += f"[{p}]" if type(p) is int else f".{p}" if out else str(p)
    return out


def _refuse(field: str) -> NoReturn:
    raise GatewayError.bad_request(
        f"'{field}' cannot be set by a client: the gateway decides where requests go", field
    )
