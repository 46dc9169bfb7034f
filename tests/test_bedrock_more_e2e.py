"""Bedrock beyond chat, through `tollway serve` with the real `openai` client against the mock's
SigV4-checking Bedrock: embeddings (Titan Text Embeddings and Cohere Embed via InvokeModel, one
signed call per part of a batch) and JSON mode (`response_format`)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from conftest import CLIENT_KEY, Gateways, Server

from tollway.mock.bedrock_api import MOCK_ACCESS_KEY_ID, MOCK_SECRET_ACCESS_KEY

TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"
CHAT = "anthropic.claude-3-5-sonnet-20240620-v1:0"
MESSAGES: list[Any] = [{"role": "user", "content": "Give me a user record"}]


def config(mock: str) -> str:
    models = f"""
models:
  - {{name: titan, model_id: "{TITAN}"}}
  - {{name: cohere, model_id: "{COHERE}"}}
  - {{name: claude, model_id: "{CHAT}"}}
  - {{name: throttled, model_id: "mock-status-429.{TITAN}"}}"""
    return f"""
type: provider-account
name: bed
provider: bedrock
base_url: {mock}
region: eu-west-1
aws_access_key_id: {MOCK_ACCESS_KEY_ID}
aws_secret_access_key: {MOCK_SECRET_ACCESS_KEY}
{models}
---
type: provider-account
name: badsig
provider: bedrock
base_url: {mock}
region: eu-west-1
aws_access_key_id: {MOCK_ACCESS_KEY_ID}
aws_secret_access_key: not-the-secret
{models}
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


def invoked(mock: Server, model_id: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = httpx.get(f"{mock.url}/_mock/requests").json()
    return [r for r in seen if r["path"] == f"/model/{model_id}/invoke"]


@pytest.mark.parametrize(("model", "model_id"), [("bed/titan", TITAN), ("bed/cohere", COHERE)])
def test_bedrock_embeddings_with_the_openai_client(
    client: openai.OpenAI, mock_upstream: Server, model: str, model_id: str
) -> None:
    before = len(invoked(mock_upstream, model_id))
    # The client asks for base64 by default and decodes it; floats when asked.
    default = client.embeddings.create(model=model, input=["one", "two words", "three"])
    floats = client.embeddings.create(model=model, input="one", encoding_format="float")
    assert [d.index for d in default.data] == [0, 1, 2]
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding)
    assert default.data[0].embedding != pytest.approx(default.data[1].embedding)
    assert default.model == model_id
    assert default.usage.prompt_tokens > 0
    assert floats.usage.prompt_tokens <= default.usage.prompt_tokens
    calls = invoked(mock_upstream, model_id)[before:]
    assert all(c["status"] == 200 for c in calls)  # every call's SigV4 signature checked
    assert calls[0]["headers"]["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={MOCK_ACCESS_KEY_ID}/"
    )
    assert "/eu-west-1/bedrock/aws4_request" in calls[0]["headers"]["authorization"]
    if model_id == TITAN:
        # Titan takes one text per call: three signed calls at once, then one.
        texts = [c["body"]["inputText"] for c in calls]
        assert sorted(texts[:3]) == ["one", "three", "two words"] and texts[3] == "one"
        assert all(c["body"].keys() == {"inputText"} for c in calls)
        assert default.usage.prompt_tokens == 4  # Titan's own counts, summed
    else:
        assert len(calls) == 2
        assert calls[0]["body"]["texts"] == ["one", "two words", "three"]
        assert calls[0]["body"]["input_type"] == "search_document"


def test_bedrock_embedding_options(client: openai.OpenAI, mock_upstream: Server) -> None:
    small = client.embeddings.create(
        model="bed/titan", input="one", dimensions=256, encoding_format="float"
    )
    assert len(small.data[0].embedding) == 256
    assert invoked(mock_upstream, TITAN)[-1]["body"] == {"inputText": "one", "dimensions": 256}
    query = client.embeddings.create(
        model="bed/cohere", input="a question", extra_body={"input_type": "search_query"}
    )
    assert len(query.data) == 1
    assert invoked(mock_upstream, COHERE)[-1]["body"]["input_type"] == "search_query"
    many = client.embeddings.create(model="bed/cohere", input=[f"text {i}" for i in range(100)])
    assert len(many.data) == 100 and many.data[99].index == 99
    assert sorted(len(c["body"]["texts"]) for c in invoked(mock_upstream, COHERE)[-2:]) == [4, 96]
    one = client.embeddings.create(model="bed/cohere", input="text 97")
    assert many.data[97].embedding == pytest.approx(one.data[0].embedding)  # kept in order


def test_bedrock_embedding_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model="bed/claude", input="one")
    assert "Titan" in bad.value.response.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model="bed/titan", input=[[1, 2, 3]])
    assert "input" in bad.value.response.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model="bed/titan", input="one", dimensions=100)
    assert bad.value.response.json()["error"]["code"] == "ValidationException"
    with pytest.raises(openai.APIStatusError) as denied:
        client.embeddings.create(model="badsig/titan", input=["one", "two"])
    assert denied.value.status_code == 502
    assert denied.value.response.json()["error"]["code"] == "upstream_auth_error"
    assert "not-the-secret" not in denied.value.response.text
    with pytest.raises(openai.RateLimitError) as throttled:
        client.embeddings.create(model="bed/throttled", input=["one", "two"])
    assert throttled.value.response.json()["error"]["code"] == "ThrottlingException"


CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
FORMATS: list[Any] = [
    {"type": "json_object"},
    {"type": "json_schema", "json_schema": {"name": "place", "schema": CITY, "strict": True}},
]


def sent_to_converse(mock: Server) -> dict[str, Any]:
    seen: list[dict[str, Any]] = httpx.get(f"{mock.url}/_mock/requests").json()
    body: dict[str, Any] = [r for r in seen if r["path"].startswith(f"/model/{CHAT}/")][-1]["body"]
    return body


@pytest.mark.parametrize("response_format", FORMATS, ids=["json_object", "json_schema"])
def test_bedrock_json_mode_answers_json_content(
    client: openai.OpenAI, mock_upstream: Server, response_format: Any
) -> None:
    whole = client.chat.completions.create(
        model="bed/claude", messages=MESSAGES, response_format=response_format
    )
    choice = whole.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert json.loads(choice.message.content or "") == {"city": "Paris"}
    # A tool the model must call, whose input schema is the asked-for one.
    config = sent_to_converse(mock_upstream)["toolConfig"]
    (tool,) = config["tools"]
    assert config["toolChoice"] == {"tool": {"name": tool["toolSpec"]["name"]}}
    schema = tool["toolSpec"]["inputSchema"]["json"]
    assert schema == (CITY if response_format["type"] == "json_schema" else {"type": "object"})

    chunks = list(
        client.chat.completions.create(
            model="bed/claude",
            messages=MESSAGES,
            response_format=response_format,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"city": "Paris"}
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0


def test_bedrock_json_mode_beside_real_tools(client: openai.OpenAI, mock_upstream: Server) -> None:
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": CITY}}
    answer = client.chat.completions.create(
        model="bed/claude",
        messages=MESSAGES,
        tools=[weather],
        response_format={"type": "json_object"},
    )
    # The model may call the client's tool or answer in JSON: it must do one of them.
    config = sent_to_converse(mock_upstream)["toolConfig"]
    names = [t["toolSpec"]["name"] for t in config["tools"]]
    assert names == ["get_weather", "tollway_json_answer"] and config["toolChoice"] == {"any": {}}
    calls = answer.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "get_weather"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="bed/claude",
            messages=MESSAGES,
            response_format={"type": "json_schema", "json_schema": {"name": "x"}},  # type: ignore[typeddict-item]
        )
    assert "json_schema" in bad.value.response.json()["error"]["message"]
