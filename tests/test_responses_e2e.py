"""`POST /v1/responses` and `GET /v1/responses/{id}` through `tollway serve` with the real
`openai` client's `responses` API: OpenAI-compatible and Azure targets, stream and not,
function tools, usage metered, retrieval from the account that made the response."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest
from conftest import CLIENT_KEY, Gateways, Server

MODELS = ["oa/gpt-4o-mini", "az/gpt-4o"]
TEXT_START = "This is a deterministic answer"
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


def config(mock: str, other: str) -> str:
    return f"""
type: provider-account
name: oa
provider: openai-compatible
base_url: {mock}/v1
models: [gpt-4o-mini]
---
type: provider-account
name: az
provider: azure-openai
base_url: {other}
api_key: azure-key
models: [gpt-4o]
---
type: provider-account
name: anth
provider: anthropic
base_url: {mock}/v1
api_key: sk-ant
models: [claude-3-5-sonnet-latest]
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
"""


@pytest.fixture(scope="module")
def gateways(mock_upstream: Server, module_gateways: Gateways) -> tuple[Server, Server]:
    """A gateway with two workers (a GET may land on the worker that did not see the id),
    its Azure account on a second mock so each id lives on one account only."""
    from conftest import mock_server

    with mock_server() as other:
        gw = module_gateways.start(config(mock_upstream.url, other.url), workers=2)
        yield gw, other  # type: ignore[misc]


@pytest.fixture(scope="module")
def client(gateways: tuple[Server, Server]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateways[0].url}/v1", api_key=CLIENT_KEY, max_retries=0)


@pytest.mark.parametrize("model", MODELS)
def test_text_answer_and_usage(client: openai.OpenAI, model: str) -> None:
    r = client.responses.create(model=model, input="Say something", instructions="Be brief")
    assert r.object == "response" and r.status == "completed"
    assert r.output_text.startswith(TEXT_START)
    assert r.usage is not None and r.usage.input_tokens > 0 and r.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_stream_gives_the_same_text(client: openai.OpenAI, model: str) -> None:
    whole = client.responses.create(model=model, input="Say something")
    deltas, kinds, final = [], [], None
    for event in client.responses.create(model=model, input="Say something", stream=True):
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type == "response.completed":
            final = event.response
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "".join(deltas) == whole.output_text
    assert final is not None and final.usage is not None
    assert final.usage.output_tokens == whole.usage.output_tokens  # type: ignore[union-attr]
    with client.responses.stream(model=model, input="Say something") as stream:
        helper = stream.get_final_response()
    assert helper.output_text == whole.output_text


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_function_calls(client: openai.OpenAI, model: str, stream: bool) -> None:
    if stream:
        with client.responses.stream(model=model, input="Weather?", tools=TOOLS) as s:
            r = s.get_final_response()
    else:
        r = client.responses.create(model=model, input="Weather?", tools=TOOLS)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    follow = client.responses.create(
        model=model,
        tools=TOOLS,
        input=[
            {"role": "user", "content": "Weather?"},
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny"},
        ],
    )
    assert follow.output_text.startswith(TEXT_START)


@pytest.mark.parametrize("model", MODELS)
def test_retrieve_from_the_account_that_made_it(client: openai.OpenAI, model: str) -> None:
    made = client.responses.create(model=model, input="Remember me")
    for _ in range(4):  # either worker, whether or not it saw the id
        got = client.responses.retrieve(made.id)
        assert got.id == made.id and got.output_text == made.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nothing_here")


def test_requests_reach_the_right_endpoints(
    client: openai.OpenAI, gateways: tuple[Server, Server], mock_upstream: Server
) -> None:
    _, other = gateways
    httpx.delete(f"{other.url}/_mock/requests")
    client.responses.create(model="az/gpt-4o", input="hi")
    sent = httpx.get(f"{other.url}/_mock/requests").json()[-1]
    assert sent["path"] == "/openai/v1/responses"
    assert sent["headers"]["api-key"] == "azure-key"
    assert sent["body"]["model"] == "gpt-4o"


def test_targets_without_the_api_and_bad_bodies_are_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="anth/claude-3-5-sonnet-latest", input="hi")
    assert "responses" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        client.post("/responses", body={"model": "oa/gpt-4o-mini"}, cast_to=httpx.Response)


def test_usage_is_metered(gateways: tuple[Server, Server], client: openai.OpenAI) -> None:
    before = _tokens(gateways[0])
    client.responses.create(model="oa/gpt-4o-mini", input="one two three")
    list(client.responses.create(model="oa/gpt-4o-mini", input="one two three", stream=True))
    deadline = time.monotonic() + 5  # metrics are updated off the request path
    while _tokens(gateways[0]) <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _tokens(gateways[0]) > before


def _tokens(gw: Server) -> float:
    text = httpx.get(f"{gw.url}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if "output_tokens" in line and not line.startswith("#") and "oa/gpt-4o-mini" in line:
            total += float(line.rsplit(" ", 1)[1])
    return total
