"""Gemini and Bedrock translation as pure functions, their streams through the Rust meter split
at every byte, and SigV4 signing checked against independent implementations."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tollway.engine import SseMeter, compile_engine
from tollway.mock.bedrock_api import event_frame, sigv4_signature
from tollway.providers import TranslationError
from tollway.providers import bedrock as b
from tollway.providers import google as g

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
HISTORY: list[Any] = [
    {"role": "system", "content": "Be terse."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
        ],
    },
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
]


def test_gemini_request_roles_images_tools_and_json_mode() -> None:
    req = g.to_request(
        {
            "messages": HISTORY,
            "tools": [WEATHER],
            "tool_choice": "required",
            "response_format": {
                "type": "json_schema",
                "json_schema": {"schema": {"type": "object"}},
            },
            "stop": "END",
            "max_completion_tokens": 9,
            "reasoning_effort": "low",
        }
    )
    assert req["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert req["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
            ],
        },
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}],
        },
    ]
    (decl,) = req["tools"][0]["functionDeclarations"]
    assert decl["name"] == "get_weather" and decl["parametersJsonSchema"]["type"] == "object"
    assert req["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert req["generationConfig"] == {
        "maxOutputTokens": 9,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
        "thinkingConfig": {"thinkingBudget": 1024},
    }
    with pytest.raises(TranslationError):
        g.to_request({"messages": [{"role": "user", "content": [{"type": "audio"}]}]})


def test_gemini_answers_errors_and_safety_map_to_openai() -> None:
    body = {
        "candidates": [
            {
                "content": {
                    "parts": [{"text": "hmm", "thought": True}, {"text": "Hi"}],
                    "role": "model",
                },
                "finishReason": "MAX_TOKENS",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 3,
            "thoughtsTokenCount": 4,
            "cachedContentTokenCount": 6,
        },
        "responseId": "r1",
    }
    out = msgspec.json.decode(g.from_response(msgspec.json.encode(body), "gemini-x"))
    assert out["choices"][0]["message"]["content"] == "Hi"
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 7,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 6},
        "completion_tokens_details": {"reasoning_tokens": 4},
    }
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 2},
    }
    out = msgspec.json.decode(g.from_response(msgspec.json.encode(blocked), "m"))
    assert out["choices"][0]["finish_reason"] == "content_filter"
    err = b'[{"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}}]'
    assert msgspec.json.decode(g.from_error(429, err))["error"] == {
        "message": "Quota",
        "type": "rate_limit_error",
        "param": None,
        "code": "RESOURCE_EXHAUSTED",
    }


def test_bedrock_converse_request_and_answer() -> None:
    req = b.to_converse(
        {"messages": HISTORY, "tools": [WEATHER], "temperature": 1.7, "max_tokens": 5}
    )
    assert req["system"] == [{"text": "Be terse."}]
    user, assistant, result = req["messages"]
    assert user["content"][1] == {"image": {"format": "png", "source": {"bytes": "iVBO"}}}
    assert assistant == {
        "role": "assistant",
        "content": [
            {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}}
        ],
    }
    assert result["content"] == [
        {"toolResult": {"toolUseId": "call_1", "content": [{"text": '{"temp": 21}'}]}}
    ]
    assert req["inferenceConfig"] == {"maxTokens": 5, "temperature": 1.0}
    assert req["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {
        "json": WEATHER["function"]["parameters"]
    }
    # A follow-up without `tools` still declares the tools its history used.
    bare = b.to_converse({"messages": HISTORY})["toolConfig"]["tools"]
    assert bare == [
        {"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}
    ]
    with pytest.raises(TranslationError):
        b.to_converse(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            }
        )
    answer = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {"a": 1}}}],
            }
        },
        "stopReason": "tool_use",
        "usage": {
            "inputTokens": 3,
            "outputTokens": 2,
            "cacheReadInputTokens": 4,
            "cacheWriteInputTokens": 1,
        },
    }
    out = msgspec.json.decode(b.from_converse(msgspec.json.encode(answer), "m"))
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["choices"][0]["message"]["tool_calls"][0]["function"] == {
        "name": "f",
        "arguments": '{"a":1}',
    }
    assert out["usage"]["prompt_tokens"] == 8 and out["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 4
    }
    assert out["usage"]["cache_creation_input_tokens"] == 1  # priced at the cache-write rate
    throttled = msgspec.json.decode(b.from_error(429, b'{"message": "Too many requests"}'))["error"]
    assert throttled["type"] == "rate_limit_error" and throttled["code"] == "ThrottlingException"


def _meter_output(fmt: str, chunks: list[bytes]) -> tuple[bytes, SseMeter]:
    meter = SseMeter(fmt, "m", 0.0, include_usage=True)
    out = b"".join(meter.feed(c, 1.0) for c in chunks)
    return out + meter.finish(2.0), meter


def _chunks(out: bytes) -> list[dict[str, Any]]:
    return [
        msgspec.json.decode(line[6:]) for line in out.split(b"\n\n") if line.startswith(b"data: {")
    ]


GEMINI_STREAM = (
    b'data: {"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"},"index":0}],'
    b'"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":1},"responseId":"r9"}\r\n\r\n'
    b'data: {"candidates":[{"content":{"parts":[{"text":"lo"},'
    b'{"functionCall":{"name":"f","args":{"x":1}}}],'
    b'"role":"model"},"finishReason":"STOP","index":0}],'
    b'"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2,"thoughtsTokenCount":3}}\r\n\r\n'
)


def test_gemini_stream_translates_whatever_the_split() -> None:
    whole, meter = _meter_output("gemini", [GEMINI_STREAM])
    chunks = _chunks(whole)
    assert whole.endswith(b"data: [DONE]\n\n") and meter.error is None
    assert chunks[0]["id"] == "r9" and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello"
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0]["function"] == {"name": "f", "arguments": '{"x":1}'} and calls[0]["id"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "total_tokens": 10,
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    for i in range(0, len(GEMINI_STREAM), 7):
        assert _meter_output("gemini", [GEMINI_STREAM[:i], GEMINI_STREAM[i:]])[0] == whole
    cut, meter = _meter_output("gemini", [GEMINI_STREAM[: GEMINI_STREAM.index(b"data: ", 10)]])
    assert b"[DONE]" not in cut and meter.error is not None


def _bedrock_event(kind: str, data: dict[str, Any]) -> bytes:
    headers = (
        (":event-type", kind),
        (":content-type", "application/json"),
        (":message-type", "event"),
    )
    return event_frame(headers, msgspec.json.encode(data))


BEDROCK_STREAM = b"".join(
    (
        _bedrock_event("messageStart", {"role": "assistant"}),
        _bedrock_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        _bedrock_event(
            "contentBlockStart",
            {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}},
        ),
        _bedrock_event(
            "contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"a":'}}}
        ),
        _bedrock_event(
            "contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}}
        ),
        _bedrock_event("messageStop", {"stopReason": "tool_use"}),
        _bedrock_event(
            "metadata", {"usage": {"inputTokens": 4, "outputTokens": 6, "cacheReadInputTokens": 2}}
        ),
    )
)


def test_bedrock_event_stream_decodes_whatever_the_split() -> None:
    whole, meter = _meter_output("bedrock", [BEDROCK_STREAM])
    chunks = _chunks(whole)
    assert meter.error is None and whole.endswith(b"data: [DONE]\n\n")
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"}
    call = chunks[2]["choices"][0]["delta"]["tool_calls"][0]
    assert call["id"] == "t1" and call["function"]["name"] == "f"
    args = "".join(
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[2:5]
    )
    assert args == '{"a":1}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["prompt_tokens"] == 6 and meter.prompt_tokens == 6
    assert meter.output_tokens == 6 and meter.cached_tokens == 2
    for i in range(1, len(BEDROCK_STREAM), 5):
        assert _meter_output("bedrock", [BEDROCK_STREAM[:i], BEDROCK_STREAM[i:]])[0] == whole


def test_bedrock_bad_crc_and_exceptions_are_stream_errors() -> None:
    frame = bytearray(_bedrock_event("messageStart", {"role": "assistant"}))
    frame[-5] ^= 0xFF  # a payload byte: the message CRC no longer matches
    _, meter = _meter_output("bedrock", [bytes(frame)])
    assert meter.error is not None
    headers = (
        (":exception-type", "throttlingException"),
        (":content-type", "application/json"),
        (":message-type", "exception"),
    )
    _, meter = _meter_output("bedrock", [event_frame(headers, b'{"message":"slow down"}')])
    assert (
        meter.error is not None
        and "throttlingException" in meter.error
        and "slow down" in meter.error
    )
    assert zlib.crc32(b"") == 0  # the frames above use CRC-32 (IEEE), as event streams do


def test_sigv4_matches_an_independent_implementation(tmp_path: Path) -> None:
    config = tmp_path / "bedrock.yaml"
    config.write_text("type: provider-account\nname: b\nprovider: bedrock\nmodels: [m]\n")
    sigv4_headers = compile_engine(config).targets[0].sigv4_headers
    url = "https://bedrock-runtime.us-west-2.amazonaws.com/model/anthropic.claude-3%3A0/converse-stream"
    headers = [("content-type", "application/json"), ("x-extra", "  a   b ")]
    body = b'{"messages":[]}'
    out = dict(
        sigv4_headers(
            "POST",
            url,
            headers,
            body,
            "us-west-2",
            "bedrock",
            "AKID",
            "SECRET",
            "TOK",
            1_700_000_000.0,
        )
    )
    assert out["x-amz-date"] == "20231114T221320Z" and out["x-amz-security-token"] == "TOK"
    fields = dict(p.strip().split("=", 1) for p in out["authorization"].split(" ", 1)[1].split(","))
    signed = fields["SignedHeaders"].split(";")
    assert signed == ["content-type", "host", "x-amz-date", "x-amz-security-token", "x-extra"]
    sent = {**dict(headers), **out, "host": "bedrock-runtime.us-west-2.amazonaws.com"}
    scope = fields["Credential"].split("/", 1)[1]
    path = "/model/anthropic.claude-3%3A0/converse-stream"
    expected = sigv4_signature(
        "SECRET", "POST", path, "", sent, signed, body, out["x-amz-date"], scope
    )
    assert fields["Signature"] == expected
    botocore = pytest.importorskip("botocore.auth")
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    signer = botocore.SigV4Auth(Credentials("AKID", "SECRET", "TOK"), "bedrock", "us-west-2")
    canonical = signer.canonical_request(
        _with(request, {"X-Amz-Date": out["x-amz-date"], "X-Amz-Security-Token": "TOK"})
    )
    string_to_sign = signer.string_to_sign(request, canonical)
    assert signer.signature(string_to_sign, request) == fields["Signature"]


def _with(request: Any, headers: dict[str, str]) -> Any:
    for k, v in headers.items():
        request.headers[k] = v
    request.context["timestamp"] = headers["X-Amz-Date"]
    return request
