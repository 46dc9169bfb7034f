"""Providers and stream semantics through `tollway serve` with the real `openai` client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import CLIENT_KEY, GatewayFactory, Gateways, Server, mock_server

MESSAGES: list[Any] = [{"role": "user", "content": "Tell me something"}]


def config(mock: str) -> str:
    return f"""
type: provider-account
name: oa
provider: openai-compatible
base_url: {mock}/v1
models: [gpt-4o-mini, mock-reset-mid, mock-truncated]
---
type: provider-account
name: anth
provider: anthropic
base_url: {mock}/v1
api_key: sk-ant-test-key
models: [claude-3-5-sonnet-latest, mock-reset-mid]
---
type: provider-account
name: az
provider: azure-openai
base_url: {mock}
api_key: azure-test-key
api_version: "2024-10-21"
models: [{{name: gpt4o, model_id: my-deployment}}]
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
"""


@pytest.fixture(scope="module")
def gw(mock_upstream: Server, module_gateways: Gateways) -> Server:
    return module_gateways.start(config(mock_upstream.url))


@pytest.fixture
def client(gw: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)


def last(mock: Server) -> dict[str, Any]:
    reqs: list[dict[str, Any]] = httpx.get(f"{mock.url}/_mock/requests").json()
    return reqs[-1]


@pytest.mark.parametrize("model", ["anth/claude-3-5-sonnet-latest", "az/gpt4o", "oa/gpt-4o-mini"])
def test_stream_and_non_stream_agree_on_text_and_usage(
    client: openai.OpenAI, mock_upstream: Server, model: str
) -> None:
    whole = client.chat.completions.create(model=model, messages=MESSAGES)
    assert whole.object == "chat.completion" and whole.choices[0].finish_reason == "stop"
    chunks = list(
        client.chat.completions.create(
            model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    usage = [c.usage for c in chunks if c.usage]
    assert len(usage) == 1 and whole.usage is not None
    assert usage[0].completion_tokens == whole.usage.completion_tokens
    assert usage[0].prompt_tokens == whole.usage.prompt_tokens


def test_anthropic_and_azure_get_their_own_wire_format(
    client: openai.OpenAI, mock_upstream: Server
) -> None:
    client.chat.completions.create(
        model="anth/claude-3-5-sonnet-latest",
        messages=[{"role": "system", "content": "Be brief"}, *MESSAGES],
    )
    seen = last(mock_upstream)
    assert seen["path"] == "/v1/messages"
    assert seen["headers"]["x-api-key"] == "sk-ant-test-key"
    assert seen["headers"]["anthropic-version"]
    assert "authorization" not in seen["headers"]
    assert seen["body"]["system"] == "Be brief" and seen["body"]["max_tokens"] > 0
    client.chat.completions.create(model="az/gpt4o", messages=MESSAGES)
    seen = last(mock_upstream)
    assert seen["path"] == "/openai/deployments/my-deployment/chat/completions"
    assert "api-version=2024-10-21" in seen["query"]
    assert seen["headers"]["api-key"] == "azure-test-key"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="anth/claude-3-5-sonnet-latest", input="x")


def test_usage_chunk_only_when_the_client_asks(
    client: openai.OpenAI, mock_upstream: Server
) -> None:
    chunks = list(
        client.chat.completions.create(model="oa/gpt-4o-mini", messages=MESSAGES, stream=True)
    )
    assert chunks and all(c.usage is None for c in chunks)
    # ...but the gateway asked the provider for it, to meter the stream.
    assert last(mock_upstream)["body"]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("model", ["oa/mock-reset-mid", "oa/mock-truncated", "anth/mock-reset-mid"])
def test_a_broken_stream_ends_in_an_error_not_a_short_answer(
    client: openai.OpenAI, gw: Server, model: str
) -> None:
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
            pass
    raw = httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": model, "messages": MESSAGES, "stream": True},
    ).content
    assert b"event: error" in raw and b"[DONE]" not in raw


@pytest.fixture
def slow_mock() -> Iterator[Server]:
    with mock_server("--itl-ms", "50", "--tokens", "60") as server:
        yield server


def test_leaving_mid_stream_cancels_upstream_and_is_still_charged(
    start_gateway: GatewayFactory, slow_mock: Server
) -> None:
    gw = start_gateway(
        "type: provider-account\nname: m\nprovider: openai-compatible\n"
        f"base_url: {slow_mock.url}/v1\nmodels: [gpt-4o-mini]\n---\n"
        f"type: gateway-keys\nkeys: [{{name: k, key: {CLIENT_KEY}, subject: 'user:u'}}]\n---\n"
        "type: gateway-rate-limiting-config\nrules:\n"
        "  - {id: tokens, when: {}, limit_to: 25, unit: tokens_per_hour}\n"
    )
    body = {"model": "m/gpt-4o-mini", "messages": MESSAGES, "stream": True}
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, headers=headers) as r:
        got = 0
        for line in r.iter_lines():
            got += line.startswith("data:")
            if got >= 20:
                break  # leave before the usage chunk
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        seen: list[dict[str, Any]] = httpx.get(f"{slow_mock.url}/_mock/requests").json()
        if seen and seen[-1]["disconnected"]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the upstream stream was not cancelled")
    # ~19 output tokens seen plus the prompt, estimated locally: the 25-token bucket is spent.
    r2 = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers)
    assert r2.status_code == 429, r2.text
