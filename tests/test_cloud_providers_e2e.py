"""Gemini, Vertex AI, Bedrock and the OpenAI-compatible presets through `tollway serve` with the
real `openai` client, against the mock's faithful wire formats: the same text, streams, tools,
usage and errors as the OpenAI and Anthropic targets, and each provider's own auth (API key,
service-account OAuth tokens, SigV4)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import openai
import pytest
from conftest import CLIENT_KEY, Gateways, Server
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families
from test_tools_e2e import ASK, TEXT_START, ask, follow_up

from tollway.mock.bedrock_api import MOCK_ACCESS_KEY_ID, MOCK_SECRET_ACCESS_KEY

MESSAGES: list[Any] = [{"role": "user", "content": "Tell me something"}]
BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
CHAT_MODELS = ["gem/gemini-2.5-flash", "vtx/gemini-2.5-flash", "bed/claude"]


def service_account(mock: str, directory: Path) -> Path:
    """A service-account key file whose token endpoint is the mock's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "gateway@test-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"{mock}/token",
    }
    path = directory / "sa.json"
    path.write_text(json.dumps(info))
    return path


def config(mock: str, sa_file: Path) -> str:
    bedrock = f"""
provider: bedrock
base_url: {mock}
region: us-east-1
aws_access_key_id: {MOCK_ACCESS_KEY_ID}
models:
  - {{name: claude, model_id: "{BEDROCK_MODEL}"}}
  - mock-status-429
  - mock-throttled-mid
  - mock-reset-mid
  - mock-truncated
  - mock-corrupt-frame"""
    return f"""
type: provider-account
name: gem
provider: gemini
base_url: {mock}/v1beta
api_key: gemini-test-key
models: [gemini-2.5-flash, gemini-2.5-pro-thinking, mock-blocked, mock-status-400,
         mock-reset-mid, mock-truncated, text-embedding-004]
---
type: provider-account
name: vtx
provider: vertex
base_url: {mock}
project: test-project
region: europe-west4
service_account_file: {sa_file}
models: [gemini-2.5-flash, text-embedding-005]
---
type: provider-account
name: bed
{bedrock}
aws_secret_access_key: {MOCK_SECRET_ACCESS_KEY}
aws_session_token: session-token-1
---
type: provider-account
name: badsig
{bedrock}
aws_secret_access_key: not-the-secret
---
type: provider-account
name: mis
provider: mistral
base_url: {mock}/v1
api_key: mistral-test-key
models: [mistral-small-latest]
---
type: provider-account
name: local
provider: ollama
base_url: {mock}/v1
models: [llama3.2]
---
type: gateway-load-balancing-config
name: cloud
rules:
  - id: bedrock-throttled
    type: priority-based-routing
    when: {{models: [bedrock-throttled]}}
    load_balance_targets:
      - target: bed/mock-status-429
        retry_config: {{attempts: 2, delay: 10, on_status_codes: ["429"]}}
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
"""


@pytest.fixture(scope="module")
def gw(
    mock_upstream: Server, module_gateways: Gateways, tmp_path_factory: pytest.TempPathFactory
) -> Server:
    sa = service_account(mock_upstream.url, tmp_path_factory.mktemp("sa"))
    return module_gateways.start(config(mock_upstream.url, sa))


@pytest.fixture
def client(gw: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)


def requests_to(mock: Server, part: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = httpx.get(f"{mock.url}/_mock/requests").json()
    return [r for r in seen if part in r["path"]]


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_stream_and_non_stream_agree_on_text_and_usage(client: openai.OpenAI, model: str) -> None:
    whole = client.chat.completions.create(model=model, messages=MESSAGES)
    assert whole.object == "chat.completion" and whole.choices[0].finish_reason == "stop"
    assert (whole.choices[0].message.content or "").startswith(TEXT_START)
    chunks = list(
        client.chat.completions.create(
            model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = [c.usage for c in chunks if c.usage]
    assert len(usage) == 1 and whole.usage is not None
    assert usage[0].completion_tokens == whole.usage.completion_tokens > 0
    assert usage[0].prompt_tokens == whole.usage.prompt_tokens > 0
    # Without include_usage the client gets no usage chunk (the gateway still meters it).
    plain = list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert plain and all(c.usage is None for c in plain)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", CHAT_MODELS)
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


def test_gemini_gets_its_own_wire_format(client: openai.OpenAI, mock_upstream: Server) -> None:
    _, (call,), _ = ask(client, "gem/gemini-2.5-flash", ASK, stream=False)
    client.chat.completions.create(
        model="gem/gemini-2.5-flash",
        messages=[{"role": "system", "content": "Be brief"}, *follow_up(call)],
        response_format={"type": "json_object"},
        max_tokens=50,
        temperature=0.2,
    )
    seen = requests_to(mock_upstream, "/v1beta/models/")[-1]
    assert seen["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert seen["headers"]["x-goog-api-key"] == "gemini-test-key"
    assert "authorization" not in seen["headers"]
    body = seen["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief"}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    ]
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}
    ]
    assert body["generationConfig"] == {
        "temperature": 0.2,
        "maxOutputTokens": 50,
        "responseMimeType": "application/json",
    }
    list(
        client.chat.completions.create(model="gem/gemini-2.5-flash", messages=MESSAGES, stream=True)
    )
    seen = requests_to(mock_upstream, "/v1beta/models/")[-1]
    assert seen["path"].endswith(":streamGenerateContent") and seen["query"] == "alt=sse"


def test_vertex_mints_one_token_and_reuses_it(client: openai.OpenAI, mock_upstream: Server) -> None:
    before = len(requests_to(mock_upstream, "/token"))
    for _ in range(3):
        client.chat.completions.create(model="vtx/gemini-2.5-flash", messages=MESSAGES)
    seen = requests_to(mock_upstream, "/publishers/google/models/")[-1]
    assert seen["path"] == (
        "/v1/projects/test-project/locations/europe-west4/publishers/google/models/"
        "gemini-2.5-flash:generateContent"
    )
    assert seen["headers"]["authorization"].startswith("Bearer ya29.mock-")
    # The module's earlier tests may have minted the first one; three calls add at most one.
    assert len(requests_to(mock_upstream, "/token")) - before <= 1
    assert len(requests_to(mock_upstream, "/token")) >= 1


def test_bedrock_requests_are_signed_and_converse_shaped(
    client: openai.OpenAI, mock_upstream: Server
) -> None:
    client.chat.completions.create(
        model="bed/claude",
        messages=[{"role": "system", "content": "Be brief"}, *MESSAGES],
        max_tokens=50,
    )
    seen = requests_to(mock_upstream, "/model/")[-1]
    assert seen["path"] == f"/model/{BEDROCK_MODEL}/converse"
    assert seen["status"] == 200  # the mock checked the SigV4 signature
    auth = seen["headers"]["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={MOCK_ACCESS_KEY_ID}/")
    assert "/us-east-1/bedrock/aws4_request" in auth
    assert seen["headers"]["x-amz-security-token"] == "session-token-1"
    assert seen["body"]["system"] == [{"text": "Be brief"}]
    assert seen["body"]["inferenceConfig"] == {"maxTokens": 50}
    assert seen["body"]["messages"] == [
        {"role": "user", "content": [{"text": "Tell me something"}]}
    ]


def test_a_bad_aws_signature_is_a_gateway_auth_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="badsig/claude", messages=MESSAGES)
    assert e.value.status_code == 502
    body = e.value.response.json()["error"]
    assert body["code"] == "upstream_auth_error"
    assert "not-the-secret" not in e.value.response.text


def test_bedrock_throttling_is_retried_then_a_429(
    client: openai.OpenAI, mock_upstream: Server
) -> None:
    before = len(requests_to(mock_upstream, "/model/mock-status-429/"))
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="bedrock-throttled", messages=MESSAGES)
    error = e.value.response.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "ThrottlingException"
    assert "Too many requests" in error["message"]
    # Retried on the same target (2 more attempts on 429), then answered as a 429.
    assert len(requests_to(mock_upstream, "/model/mock-status-429/")) - before == 3


@pytest.mark.parametrize(
    "model",
    [
        "bed/mock-throttled-mid",
        "bed/mock-reset-mid",
        "gem/mock-reset-mid",
        # A last frame whose length was corrupted (found by fuzzing: it passed as finished).
        "bed/mock-corrupt-frame",
    ],
)
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


@pytest.mark.parametrize("model", ["gem/mock-truncated", "bed/mock-truncated"])
def test_a_cut_whole_answer_is_a_502_not_a_crash(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=model, messages=MESSAGES)
    assert e.value.status_code == 502
    assert e.value.response.json()["error"]["code"] == "invalid_upstream_response"


def test_gemini_errors_safety_blocks_and_thinking_usage(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gem/mock-status-400", messages=MESSAGES)
    assert e.value.response.json()["error"]["code"] == "INVALID_ARGUMENT"
    blocked = client.chat.completions.create(model="gem/mock-blocked", messages=MESSAGES)
    assert blocked.choices[0].finish_reason == "content_filter"
    assert blocked.choices[0].message.content is None
    chunks = list(
        client.chat.completions.create(model="gem/mock-blocked", messages=MESSAGES, stream=True)
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"

    whole = client.chat.completions.create(model="gem/gemini-2.5-pro-thinking", messages=MESSAGES)
    assert whole.usage is not None
    details = whole.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == 7
    assert whole.usage.prompt_tokens_details is not None
    assert whole.usage.prompt_tokens_details.cached_tokens == 2
    streamed = [
        c.usage
        for c in client.chat.completions.create(
            model="gem/gemini-2.5-pro-thinking",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        if c.usage
    ]
    assert streamed[0].model_dump() == whole.usage.model_dump()


@pytest.mark.parametrize("model", ["gem/text-embedding-004", "vtx/text-embedding-005"])
def test_google_embeddings_with_the_openai_client(client: openai.OpenAI, model: str) -> None:
    # The client asks for base64 by default and decodes it; floats when asked.
    default = client.embeddings.create(model=model, input=["one", "two words"])
    floats = client.embeddings.create(model=model, input="one", encoding_format="float")
    assert len(default.data) == 2 and default.data[1].index == 1
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding)
    assert default.data[0].embedding != pytest.approx(default.data[1].embedding)
    assert default.usage.prompt_tokens > 0


def test_presets_fill_quirks(client: openai.OpenAI, mock_upstream: Server) -> None:
    list(
        client.chat.completions.create(
            model="mis/mistral-small-latest",
            messages=MESSAGES,
            stream=True,
            max_completion_tokens=5,
            seed=3,
            user="u1",
        )
    )
    seen = requests_to(mock_upstream, "/v1/chat/completions")[-1]
    body = seen["body"]
    assert seen["headers"]["authorization"] == "Bearer mistral-test-key"
    assert body["max_tokens"] == 5 and body["random_seed"] == 3
    assert not {"max_completion_tokens", "seed", "user", "stream_options"} & body.keys()
    whole = client.chat.completions.create(model="local/llama3.2", messages=MESSAGES)
    assert whole.choices[0].message.content
    seen = requests_to(mock_upstream, "/v1/chat/completions")[-1]
    assert "authorization" not in seen["headers"]  # local servers need no key


@pytest.mark.parametrize("model", ["bed/claude", "gem/gemini-2.5-flash"])
def test_cloud_answers_are_priced_from_the_bundled_table(
    client: openai.OpenAI, gw: Server, model: str
) -> None:
    list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))

    def cost() -> float:
        text = httpx.get(f"{gw.url}/metrics").text
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "llm_gateway_request_cost" and s.labels.get("target") == model
        )

    deadline = time.monotonic() + 10
    while cost() <= 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cost() > 0


def test_images_reach_gemini_and_bedrock_in_their_shapes(
    client: openai.OpenAI, mock_upstream: Server
) -> None:
    image: list[Any] = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    for model, part in (("gem/gemini-2.5-flash", "/v1beta/"), ("bed/claude", "/model/")):
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": image}]
        )
        assert answer.choices[0].message.content
        sent = requests_to(mock_upstream, part)[-1]["body"]
        if part == "/model/":
            blocks = sent["messages"][0]["content"]
            assert blocks[1] == {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}
        else:
            parts = sent["contents"][0]["parts"]
            assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
