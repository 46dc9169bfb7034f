"""Tool calls round-trip through `tollway serve` with the real `openai` client, both providers."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import openai
import pytest
from conftest import CLIENT_KEY, Gateways, Server

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER},
    }
]
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
MODELS = ["oa/gpt-4o-mini", "anth/claude-3-5-sonnet-latest"]
# The mock's answer to anything that is not a tool call (see tollway.mock.content.Answers).
TEXT_START = "This is a deterministic answer"


def config(mock: str) -> str:
    return f"""
type: provider-account
name: oa
provider: openai-compatible
base_url: {mock}/v1
models: [gpt-4o-mini]
---
type: provider-account
name: anth
provider: anthropic
base_url: {mock}/v1
api_key: sk-ant-test-key
models: [claude-3-5-sonnet-latest]
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
"""


@pytest.fixture(scope="module")
def client(mock_upstream: Server, module_gateways: Gateways) -> openai.OpenAI:
    gw = module_gateways.start(config(mock_upstream.url))
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)


def ask(
    client: openai.OpenAI, model: str, messages: list[Any], stream: bool
) -> tuple[str | None, list[dict[str, Any]], str | None]:
    """The answer's text, tool calls (as OpenAI message dicts) and finish reason; a stream's
    tool calls are put together from their deltas by index, as OpenAI clients do."""
    if not stream:
        whole = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
        choice = whole.choices[0]
        calls = [c.model_dump(exclude_none=True) for c in choice.message.tool_calls or ()]
        return choice.message.content, calls, choice.finish_reason
    text: str | None = None
    calls_by_index: dict[int, dict[str, Any]] = {}
    finishes: list[str] = []
    for chunk in client.chat.completions.create(
        model=model, messages=messages, tools=TOOLS, stream=True
    ):
        if not chunk.choices:
            continue
        delta, finish = chunk.choices[0].delta, chunk.choices[0].finish_reason
        if delta.content:
            text = (text or "") + delta.content
        for d in delta.tool_calls or ():
            call = calls_by_index.setdefault(
                d.index, {"id": None, "type": None, "function": {"name": "", "arguments": ""}}
            )
            call["id"] = d.id or call["id"]
            call["type"] = d.type or call["type"]
            if d.function is not None:
                call["function"]["name"] += d.function.name or ""
                call["function"]["arguments"] += d.function.arguments or ""
        if finish:
            finishes.append(finish)
    assert len(finishes) == 1, finishes
    return text, [calls_by_index[i] for i in sorted(calls_by_index)], finishes[0]


def follow_up(call: dict[str, Any]) -> list[Any]:
    """The conversation after the model's tool call: the call, then its result."""
    return [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]


def provider_requests(mock: Server, path: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = httpx.get(f"{mock.url}/_mock/requests").json()
    return [r for r in seen if r["path"] == path]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", MODELS)
def test_a_tool_call_and_its_result_round_trip(
    client: openai.OpenAI, model: str, stream: bool
) -> None:
    text, calls, finish = ask(client, model, ASK, stream)
    assert finish == "tool_calls" and not text
    (call,) = calls
    assert call["type"] == "function" and call["id"]
    assert call["function"]["name"] == "get_weather"
    assert msgspec.json.decode(call["function"]["arguments"]) == {"city": "Paris"}

    text, calls, finish = ask(client, model, follow_up(call), stream)
    assert calls == [] and finish == "stop"
    assert text is not None and text.startswith(TEXT_START)


def test_anthropic_receives_tools_and_results_in_its_own_shape(
    client: openai.OpenAI, mock_upstream: Server
) -> None:
    model = "anth/claude-3-5-sonnet-latest"
    _, (call,), _ = ask(client, model, ASK, stream=False)
    sent = provider_requests(mock_upstream, "/v1/messages")[-1]["body"]
    assert sent["tools"] == [
        {"name": "get_weather", "description": "Weather now", "input_schema": WEATHER}
    ]

    ask(client, model, follow_up(call), stream=False)
    sent = provider_requests(mock_upstream, "/v1/messages")[-1]["body"]
    user, assistant, result = sent["messages"]
    assert user["role"] == "user"
    assert assistant["role"] == "assistant"
    assert assistant["content"] == [
        {"type": "tool_use", "id": call["id"], "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert result["role"] == "user"
    (block,) = result["content"]
    assert block["type"] == "tool_result" and block["tool_use_id"] == call["id"]
    assert block["content"] in ("sunny", [{"type": "text", "text": "sunny"}])
