"""Provider translation: OpenAI requests to Anthropic and back, Azure URLs, and the Anthropic
stream translated by the Rust meter, checked end to end against the mock's Messages API."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgspec
import pytest
from conftest import Server

from tollway._core import SseMeter, count_prompt_tokens, count_tokens
from tollway.providers import Endpoints, TranslationError
from tollway.providers.anthropic import (
    DEFAULT_MAX_TOKENS,
    from_anthropic_error,
    from_anthropic_response,
    to_anthropic_request,
)
from tollway.providers.azure import DEFAULT_API_VERSION
from tollway.providers.openai import ask_for_usage
from tollway.providers.registry import provider_for


class _Target(msgspec.Struct, frozen=True):
    base_url: str
    model_id: str
    api_key: str | None = "sk-test"
    headers: list[tuple[str, str]] = []
    api_version: str | None = None


def test_system_messages_roles_and_defaults() -> None:
    req = to_anthropic_request(
        {
            "model": "claude",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                {"role": "user", "content": "Hi"},
                {"role": "user", "content": [{"type": "text", "text": "there"}]},
                {"role": "assistant", "content": "Bonjour"},
            ],
            "stop": "END",
            "temperature": 1.5,
            "top_p": 0.9,
            "user": "u-1",
        },
        "claude-haiku-4-5",
    )
    assert req == {
        "model": "claude-haiku-4-5",
        "system": "Be terse.\n\nUse French.",
        "messages": [
            # Consecutive user messages merge: Anthropic needs alternating roles.
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "Bonjour"}]},
        ],
        "max_tokens": DEFAULT_MAX_TOKENS,
        "stop_sequences": ["END"],
        "temperature": 1.0,
        "top_p": 0.9,
        "metadata": {"user_id": "u-1"},
    }
    body = {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 7}
    assert to_anthropic_request(body, "m")["max_tokens"] == 7
    assert to_anthropic_request({**body, "stream": True}, "m")["stream"] is True


def test_images_become_base64_or_url_sources() -> None:
    req = to_anthropic_request(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
                    ],
                }
            ]
        },
        "m",
    )
    assert req["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}},
    ]
    with pytest.raises(TranslationError):
        to_anthropic_request(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}],
                    }
                ]
            },
            "m",
        )


_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_tools_tool_choice_and_tool_results() -> None:
    req = to_anthropic_request(
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [_WEATHER],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
        "m",
    )
    assert req["tools"] == [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "description": "Weather in a city",
        }
    ]
    assert req["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert req["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
        ],
    }
    # The tool result travels in a user message, merged with the user turn after it.
    assert req["messages"][2] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "call_1",
                "content": [{"type": "text", "text": "18C"}],
            },
            {"type": "text", "text": "Thanks"},
        ],
    }
    base = {"messages": [{"role": "user", "content": "x"}], "tools": [_WEATHER]}
    choices = {
        "auto": {"type": "auto"},
        "none": {"type": "none"},
        "required": {"type": "any"},
    }
    for openai_choice, anthropic_choice in choices.items():
        assert to_anthropic_request({**base, "tool_choice": openai_choice}, "m")["tool_choice"] == (
            anthropic_choice
        )
    specific = {"type": "function", "function": {"name": "get_weather"}}
    assert to_anthropic_request({**base, "tool_choice": specific}, "m")["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
    }
    bad_args = {
        "role": "assistant",
        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1"}}],
    }
    with pytest.raises(TranslationError):
        to_anthropic_request({"messages": [bad_args]}, "m")


def test_responses_translate_to_chat_completions() -> None:
    body = msgspec.json.encode(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 4},
        }
    )
    out = msgspec.json.decode(from_anthropic_response(body, "claude-x"))
    assert out["object"] == "chat.completion"
    assert out["model"] == "claude-x"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_1"
    assert call["function"]["name"] == "get_weather"
    assert msgspec.json.decode(call["function"]["arguments"]) == {"city": "Paris"}
    assert out["usage"] == {
        "prompt_tokens": 14,
        "completion_tokens": 5,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    for stop, finish in [("end_turn", "stop"), ("max_tokens", "length"), ("stop_sequence", "stop")]:
        body = msgspec.json.encode(
            {"content": [{"type": "text", "text": "x"}], "stop_reason": stop}
        )
        assert (
            msgspec.json.decode(from_anthropic_response(body, "m"))["choices"][0]["finish_reason"]
            == finish
        )


def test_errors_translate_to_openai_bodies() -> None:
    body = b'{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}'
    assert msgspec.json.decode(from_anthropic_error(429, body)) == {
        "error": {
            "message": "Slow down",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_error",
        }
    }
    assert (
        msgspec.json.decode(from_anthropic_error(502, b"<html>"))["error"]["type"] == "server_error"
    )


def test_endpoints_per_provider() -> None:
    azure = provider_for("azure-openai").endpoints(
        _Target("https://res.openai.azure.com/", "my gpt4o", api_version="2025-01-01-preview")
    )
    assert azure == Endpoints(
        "https://res.openai.azure.com/openai/deployments/my%20gpt4o/chat/completions"
        "?api-version=2025-01-01-preview",
        "https://res.openai.azure.com/openai/deployments/my%20gpt4o/embeddings"
        "?api-version=2025-01-01-preview",
        {"content-type": "application/json", "api-key": "sk-test"},
    )
    default = provider_for("azure-openai").endpoints(
        _Target("https://r.openai.azure.com/openai", "d")
    )
    assert default.chat_url.endswith(
        f"/openai/deployments/d/chat/completions?api-version={DEFAULT_API_VERSION}"
    )
    anthropic = provider_for("anthropic").endpoints(_Target("https://api.anthropic.com/v1", "c"))
    assert anthropic.chat_url == "https://api.anthropic.com/v1/messages"
    assert anthropic.embeddings_url is None
    assert anthropic.headers["x-api-key"] == "sk-test"
    assert anthropic.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in anthropic.headers
    openai = provider_for("openai").endpoints(_Target("https://api.openai.com/v1", "gpt-4o"))
    assert openai.headers["authorization"] == "Bearer sk-test"
    assert provider_for("anthropic").stream_format == "anthropic"
    assert provider_for("openai-compatible").stream_format == "openai"


def test_stream_usage_is_requested_and_whether_the_client_asked_is_kept() -> None:
    body: dict[str, Any] = {"stream": True}
    assert ask_for_usage(body) is False
    assert body["stream_options"] == {"include_usage": True}
    assert ask_for_usage(body) is True


def test_token_counting_helpers() -> None:
    assert count_tokens("hello world", "gpt-4o") == 2
    body = msgspec.json.encode({"messages": [{"role": "user", "content": "hello world"}]})
    assert count_prompt_tokens(body, "gpt-4o") > 2


async def _post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, list[bytes]]:
    """Status and body chunks as the network delivered them."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, headers=headers, data=body) as r,
    ):
        chunks: list[bytes] = []
        try:
            async for chunk in r.content.iter_any():
                chunks.append(chunk)
        except aiohttp.ClientPayloadError:
            pass  # a reset mid-stream: the meter must notice the missing end
        return r.status, chunks


def _call(mock: Server, body: dict[str, Any]) -> tuple[int, list[bytes]]:
    provider = provider_for("anthropic")
    endpoints = provider.endpoints(_Target(f"{mock.url}/v1", "claude-haiku-4-5"))
    payload = provider.request_body(body, body["model"])
    return asyncio.run(_post(endpoints.chat_url, endpoints.headers, payload))


def _metered(chunks: list[bytes], include_usage: bool) -> tuple[SseMeter, list[Any]]:
    meter = SseMeter("anthropic", "claude-haiku-4-5", 0.0, include_usage=include_usage)
    out = b"".join(meter.feed(c, float(i + 1)) for i, c in enumerate(chunks)) + meter.finish()
    events = [e.removeprefix(b"data: ") for e in out.split(b"\n\n") if e]
    return meter, [e.decode() if e == b"[DONE]" else msgspec.json.decode(e) for e in events]


def test_anthropic_stream_matches_the_non_stream_answer(mock_upstream: Server) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    request = {"model": "claude-haiku-4-5", "messages": messages, "max_tokens": 9}
    status, chunks = _call(mock_upstream, request)
    assert status == 200
    provider = provider_for("anthropic")
    answer = msgspec.json.decode(provider.response_body(200, b"".join(chunks), "claude-haiku-4-5"))

    status, chunks = _call(mock_upstream, {**request, "stream": True})
    assert status == 200
    meter, events = _metered(chunks, include_usage=True)
    assert meter.error is None and meter.done
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-2])
    assert text == answer["choices"][0]["message"]["content"]
    assert events[-2]["usage"] == answer["usage"]
    assert meter.output_tokens == answer["usage"]["completion_tokens"] == 9
    assert meter.prompt_tokens == answer["usage"]["prompt_tokens"]
    assert not meter.usage_estimated
    assert meter.finish_reason == answer["choices"][0]["finish_reason"] == "length"
    assert meter.ttft_ms is not None and meter.ttft_ms > 0

    # Without include_usage there is no usage chunk; the rest is identical.
    _, plain = _metered(chunks, include_usage=False)
    assert plain == [e for e in events if not (isinstance(e, dict) and "usage" in e)]


def test_anthropic_errors_and_broken_streams(mock_upstream: Server) -> None:
    status, chunks = _call(
        mock_upstream,
        {"model": "mock-status-429", "messages": [{"role": "user", "content": "x"}]},
    )
    assert status == 429
    error = msgspec.json.decode(
        provider_for("anthropic").response_body(status, b"".join(chunks), "m")
    )
    assert error["error"]["type"] == "rate_limit_error"

    for model, code in [
        ("mock-truncated", "invalid_upstream_stream"),
        ("mock-reset-mid", "upstream_stream_truncated"),
    ]:
        request = {"model": model, "messages": [{"role": "user", "content": "x"}], "stream": True}
        status, chunks = _call(mock_upstream, request)
        meter, events = _metered(chunks, include_usage=True)
        assert meter.error_code == code, model
        assert "[DONE]" not in events
        # Charged all the same: the provider's prompt count and the output seen so far.
        assert meter.prompt_tokens is not None
        assert meter.output_tokens > 0
        assert meter.usage_estimated
