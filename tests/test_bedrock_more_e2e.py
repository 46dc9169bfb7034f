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


def parse_json(text: str | None) -> Any:
    assert text is not None
    return json.loads(text)
