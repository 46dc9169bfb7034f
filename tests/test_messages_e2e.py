"""`POST /v1/messages` through `tollway serve` with the real `anthropic` client: passed through
to an Anthropic account, translated for an OpenAI-shaped one; text, streams, tools, images,
errors, limits and count_tokens."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest
from conftest import CLIENT_KEY, LIMITED_KEY, Gateways, Server

MODELS = ["oa/gpt-4o-mini", "anth/claude-3-5-sonnet-latest"]
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS: list[Any] = [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER}]
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
TEXT_START = "This is a deterministic answer"
PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


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
keys:
  - {{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}
  - {{name: limited, key: {LIMITED_KEY}, subject: "user:bob", allowed_models: ["oa/*"]}}
---
type: gateway-rate-limiting-config
rules:
  - {{id: bob-2rpm, when: {{subjects: ["user:bob"]}}, limit_to: 2, unit: requests_per_minute}}
"""


@pytest.fixture(scope="module")
def gateway(mock_upstream: Server, module_gateways: Gateways) -> Server:
    return module_gateways.start(config(mock_upstream.url))


@pytest.fixture(scope="module")
def client(gateway: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)


@pytest.mark.parametrize("model", MODELS)
def test_text_answer_with_usage(client: anthropic.Anthropic, model: str) -> None:
    msg = client.messages.create(model=model, max_tokens=100, messages=ASK)
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text"
    assert msg.content[0].text.startswith(TEXT_START)
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_stream_events_give_the_same_text(client: anthropic.Anthropic, model: str) -> None:
    whole = client.messages.create(model=model, max_tokens=100, messages=ASK)
    with client.messages.stream(model=model, max_tokens=100, messages=ASK) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert "message_delta" in kinds
    assert final.content[0].type == "text" and whole.content[0].type == "text"
    assert final.content[0].text == whole.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == whole.usage.output_tokens


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_round_trip(client: anthropic.Anthropic, model: str, stream: bool) -> None:
    if stream:
        with client.messages.stream(model=model, max_tokens=100, messages=ASK, tools=TOOLS) as s:
            msg = s.get_final_message()
    else:
        msg = client.messages.create(model=model, max_tokens=100, messages=ASK, tools=TOOLS)
    assert msg.stop_reason == "tool_use"
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather"
    assert uses[0].input == {"city": "Paris"}
    follow = [
        *ASK,
        {"role": "assistant", "content": [u.model_dump() for u in uses]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny"}],
        },
    ]
    answer = client.messages.create(model=model, max_tokens=100, messages=follow, tools=TOOLS)
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].type == "text"


@pytest.mark.parametrize("model", MODELS)
def test_images_and_system_prompt(client: anthropic.Anthropic, model: str) -> None:
    source = {"type": "base64", "media_type": "image/png", "data": PIXEL}
    image = {"type": "image", "source": source}
    msg = client.messages.create(
        model=model,
        max_tokens=50,
        system="Be brief.",
        messages=[{"role": "user", "content": [image, {"type": "text", "text": "What is it?"}]}],
    )
    assert msg.content[0].type == "text"


def test_anthropic_targets_get_the_clients_own_body(
    client: anthropic.Anthropic, mock_upstream: Server
) -> None:
    httpx.delete(f"{mock_upstream.url}/_mock/requests")
    system = [{"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}]
    client.messages.create(
        model="anth/claude-3-5-sonnet-latest", max_tokens=10, system=system, messages=ASK
    )
    body = httpx.get(f"{mock_upstream.url}/_mock/requests").json()[-1]["body"]
    assert body["system"] == system, "the cache breakpoint reached Anthropic"
    assert body["model"] == "claude-3-5-sonnet-latest"
    assert body["messages"] == ASK


def test_x_api_key_and_bearer_both_work(gateway: Server) -> None:
    body = {"model": MODELS[0], "max_tokens": 5, "messages": ASK}
    for headers in ({"x-api-key": CLIENT_KEY}, {"authorization": f"Bearer {CLIENT_KEY}"}):
        r = httpx.post(f"{gateway.url}/v1/messages", json=body, headers=headers)
        assert r.status_code == 200, r.text


def test_errors_are_anthropic_shaped(gateway: Server, client: anthropic.Anthropic) -> None:
    r = httpx.post(f"{gateway.url}/v1/messages", json={"model": MODELS[0]})
    assert r.status_code == 401
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model=MODELS[0], max_tokens=0, messages=ASK)
    assert "max_tokens" in str(bad.value)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nobody/nothing", max_tokens=5, messages=ASK)
    other = anthropic.Anthropic(base_url=gateway.url, api_key=LIMITED_KEY, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError):
        other.messages.create(model=MODELS[1], max_tokens=5, messages=ASK)


def test_rate_limits_apply(gateway: Server) -> None:
    bob = anthropic.Anthropic(base_url=gateway.url, api_key=LIMITED_KEY, max_retries=0)
    statuses = []
    for _ in range(3):
        try:
            bob.messages.create(model=MODELS[0], max_tokens=5, messages=ASK)
            statuses.append(200)
        except anthropic.RateLimitError as e:
            statuses.append(429)
            assert e.body is not None and "rate_limit_error" in str(e.body)
    assert statuses.count(429) >= 1


def test_count_tokens(client: anthropic.Anthropic) -> None:
    short = client.messages.count_tokens(model=MODELS[0], messages=ASK)
    longer = client.messages.count_tokens(model=MODELS[1], messages=ASK * 3, tools=TOOLS)
    assert 0 < short.input_tokens < longer.input_tokens
