"""`POST /v1/messages` with the real `anthropic` client routed to Gemini, Vertex AI and Bedrock
targets through `tollway serve`: streams arrive as Anthropic events (translated from the
provider's stream via OpenAI chunks), with the same text, tools and usage as whole answers,
metered and costed; a stream that breaks ends in an `error` event, not a short answer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from conftest import CLIENT_KEY, Gateways, Server
from prometheus_client.parser import text_string_to_metric_families
from test_cloud_providers_e2e import BEDROCK_MODEL, service_account
from test_messages_e2e import ASK, TEXT_START, TOOLS

from tollway.mock.bedrock_api import MOCK_ACCESS_KEY_ID, MOCK_SECRET_ACCESS_KEY

MODELS = ["gem/gemini-2.5-flash", "vtx/gemini-2.5-flash", "bed/claude"]


def config(mock: str, sa_file: Path) -> str:
    return f"""
type: provider-account
name: gem
provider: gemini
base_url: {mock}/v1beta
api_key: gemini-test-key
models: [gemini-2.5-flash, gemini-2.5-pro-thinking, mock-reset-mid]
---
type: provider-account
name: vtx
provider: vertex
base_url: {mock}
project: test-project
region: europe-west4
service_account_file: {sa_file}
models: [gemini-2.5-flash]
---
type: provider-account
name: bed
provider: bedrock
base_url: {mock}
region: us-east-1
aws_access_key_id: {MOCK_ACCESS_KEY_ID}
aws_secret_access_key: {MOCK_SECRET_ACCESS_KEY}
models:
  - {{name: claude, model_id: "{BEDROCK_MODEL}"}}
  - mock-throttled-mid
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
"""


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: Server, module_gateways: Gateways, tmp_path_factory: pytest.TempPathFactory
) -> Server:
    sa = service_account(mock_upstream.url, tmp_path_factory.mktemp("sa"))
    return module_gateways.start(config(mock_upstream.url, sa))


@pytest.fixture(scope="module")
def client(gateway: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)


def metered(gateway: Server, target: str) -> tuple[float, float]:
    """(cost in USD, output tokens) the gateway's `/metrics` show for `target`."""
    text = httpx.get(f"{gateway.url}/metrics").text
    totals = {"llm_gateway_request_cost": 0.0, "llm_gateway_output_tokens": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = s.name.removesuffix("_total")
            if name in totals and s.labels.get("target") == target:
                totals[name] += s.value
    return totals["llm_gateway_request_cost"], totals["llm_gateway_output_tokens"]


@pytest.mark.parametrize("model", MODELS)
def test_streams_from_cloud_targets_are_anthropic_events(
    client: anthropic.Anthropic, gateway: Server, model: str
) -> None:
    whole = client.messages.create(model=model, max_tokens=100, messages=ASK)
    before = metered(gateway, model)
    with client.messages.stream(model=model, max_tokens=100, messages=ASK) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1
    assert kinds.count("content_block_delta") > 1  # streamed, not one lump
    assert final.id.startswith("msg_")
    assert final.content[0].type == "text" and whole.content[0].type == "text"
    assert final.content[0].text == whole.content[0].text
    assert final.content[0].text.startswith(TEXT_START)
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == whole.usage.output_tokens > 0
    assert final.usage.input_tokens == whole.usage.input_tokens > 0
    # Metered and costed like any stream: the answer's tokens and a price.
    deadline = time.monotonic() + 10
    while metered(gateway, model)[1] < before[1] + final.usage.output_tokens:
        assert time.monotonic() < deadline, "the stream's usage never reached /metrics"
        time.sleep(0.1)
    cost, tokens = metered(gateway, model)
    assert tokens == before[1] + final.usage.output_tokens
    assert cost > before[0]


@pytest.mark.parametrize("model", ["gem/gemini-2.5-flash", "bed/claude"])
def test_tool_use_streams_from_cloud_targets(client: anthropic.Anthropic, model: str) -> None:
    with client.messages.stream(model=model, max_tokens=100, messages=ASK, tools=TOOLS) as s:
        msg = s.get_final_message()
    assert msg.stop_reason == "tool_use"
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id
    assert uses[0].input == {"city": "Paris"}


def test_thinking_tokens_count_as_output(client: anthropic.Anthropic) -> None:
    model = "gem/gemini-2.5-pro-thinking"
    whole = client.messages.create(model=model, max_tokens=100, messages=ASK)
    with client.messages.stream(model=model, max_tokens=100, messages=ASK) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.cache_read_input_tokens == whole.usage.cache_read_input_tokens == 2


@pytest.mark.parametrize("model", ["bed/mock-throttled-mid", "gem/mock-reset-mid"])
def test_a_broken_cloud_stream_ends_in_an_anthropic_error_event(
    client: anthropic.Anthropic, gateway: Server, model: str
) -> None:
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(model=model, max_tokens=100, messages=ASK) as stream,
    ):
        for _ in stream:
            pass
    body: dict[str, Any] = {"model": model, "max_tokens": 100, "messages": ASK, "stream": True}
    raw = httpx.post(
        f"{gateway.url}/v1/messages", headers={"x-api-key": CLIENT_KEY}, json=body
    ).text
    assert "event: error" in raw and "message_stop" not in raw
    assert '"type":"error"' in raw.partition("event: error")[2]
