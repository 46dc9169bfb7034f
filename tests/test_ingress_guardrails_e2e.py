"""Content guardrails on the client APIs besides chat, through `tollway serve`: the OpenAI
Responses API with the real `openai` client's `responses` API (input guardrails read and
redact `input`, a string or items with `input_text` parts, and `instructions`; output
guardrails check and redact the answer's `output_text`, whole and streamed), and the
Anthropic Messages API's streams with the real `anthropic` client."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest
from conftest import CLIENT_KEY, Gateways, Server
from test_guardrails_e2e import INJECTION

EMAIL = "jane.doe@example.com"
BLOCK_OUTPUT = {"X-TFY-GUARDRAILS": '{"llm_output_guardrails": ["no-mock"]}'}


def config(mock: str) -> str:
    return f"""
type: provider-account
name: oa
provider: openai-compatible
base_url: {mock}/v1
models: [gpt-4o-mini, mock-slow-2000]
---
type: provider-account
name: anth
provider: anthropic
base_url: {mock}/v1
api_key: sk-ant-test-key
models: [claude-3-5-sonnet-latest]
---
type: provider-account
name: gem
provider: gemini
base_url: {mock}/v1beta
api_key: gemini-test-key
models: [gemini-2.5-flash]
---
type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
---
type: gateway-guardrails-config
guardrails:
  - {{name: pii, kind: pii, operation: mutate}}
  - {{name: injection, kind: prompt-injection}}
  - {{name: secrets, kind: secrets}}
  - name: brand
    kind: regex
    operation: mutate
    patterns: [{{name: BRAND, pattern: "Tollway"}}]
  - name: no-mock
    kind: regex
    patterns: [{{name: MOCK, pattern: "deterministic answer"}}]
rules:
  - id: default
    when: {{}}
    llm_input_guardrails: [pii, injection]
    llm_output_guardrails: [brand, secrets]
"""


@pytest.fixture(scope="module")
def gw(mock_upstream: Server, module_gateways: Gateways) -> Server:
    return module_gateways.start(config(mock_upstream.url))


@pytest.fixture
def client(gw: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)


def sent_upstream(mock: Server) -> dict[str, Any]:
    seen: list[dict[str, Any]] = httpx.get(f"{mock.url}/_mock/requests").json()
    body: dict[str, Any] = [r for r in seen if r["path"] == "/v1/responses"][-1]["body"]
    return body


def test_pii_in_responses_input_never_reaches_the_provider(
    client: openai.OpenAI, mock_upstream: Server
) -> None:
    client.responses.create(model="oa/gpt-4o-mini", input=f"Mail me at {EMAIL}")
    sent = sent_upstream(mock_upstream)
    assert EMAIL not in str(sent) and "[REDACTED:EMAIL]" in sent["input"]
    items: Any = [
        {"role": "user", "content": [{"type": "input_text", "text": f"I am {EMAIL}"}]},
        {"role": "user", "content": f"Write to {EMAIL}"},
    ]
    client.responses.create(
        model="oa/gpt-4o-mini", instructions=f"The admin is {EMAIL}", input=items
    )
    sent = sent_upstream(mock_upstream)
    assert EMAIL not in str(sent)
    assert sent["input"][0]["content"][0] == {
        "type": "input_text",
        "text": "I am [REDACTED:EMAIL]",
    }
    assert sent["input"][1]["content"] == "Write to [REDACTED:EMAIL]"
    assert sent["instructions"] == "The admin is [REDACTED:EMAIL]"


@pytest.mark.parametrize("as_items", [False, True])
def test_prompt_injection_in_responses_input_is_blocked(
    client: openai.OpenAI, mock_upstream: Server, as_items: bool
) -> None:
    text: Any = INJECTION
    if as_items:
        text = [{"role": "user", "content": [{"type": "input_text", "text": INJECTION}]}]
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="oa/mock-slow-2000", input=text)
    error = info.value.response.json()["error"]
    assert error["code"] == "guardrail_blocked" and "'injection'" in error["message"]
    assert "system prompt" not in error["message"]


def test_responses_answers_are_redacted_whole_and_streamed(client: openai.OpenAI) -> None:
    whole = client.responses.create(model="oa/gpt-4o-mini", input="hello")
    assert "Tollway" not in whole.output_text and "[REDACTED:BRAND]" in whole.output_text
    deltas: list[str] = []
    done: list[str] = []
    final = None
    for event in client.responses.create(model="oa/gpt-4o-mini", input="hello", stream=True):
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.output_text.done":
            done.append(event.text)
        elif event.type == "response.completed":
            final = event.response
    assert "".join(deltas) == whole.output_text
    assert done == [whole.output_text]
    assert final is not None and final.output_text == whole.output_text
    # The SDK's own accumulation of the stream agrees.
    with client.responses.stream(model="oa/gpt-4o-mini", input="hello") as stream:
        assert stream.get_final_response().output_text == whole.output_text


def test_an_output_validator_blocks_a_responses_answer(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="oa/gpt-4o-mini", input="hello", extra_headers=BLOCK_OUTPUT)
    assert "'no-mock'" in info.value.response.json()["error"]["message"]
    stream = client.responses.create(
        model="oa/gpt-4o-mini", input="hello", stream=True, extra_headers=BLOCK_OUTPUT
    )
    with pytest.raises(openai.APIError) as broken:
        for event in stream:
            assert event.type != "response.completed", "the blocked answer was completed"
    assert "no-mock" in str(broken.value)


@pytest.mark.parametrize(
    "model", ["oa/gpt-4o-mini", "anth/claude-3-5-sonnet-latest", "gem/gemini-2.5-flash"]
)
def test_messages_streams_are_guarded_like_whole_answers(gw: Server, model: str) -> None:
    """Translated (OpenAI, Gemini) and passed-through (Anthropic) streams alike."""
    with anthropic.Anthropic(base_url=gw.url, api_key=CLIENT_KEY, max_retries=0) as client:
        check_messages_stream(client, model)


def check_messages_stream(client: anthropic.Anthropic, model: str) -> None:
    ask: Any = [{"role": "user", "content": "hello"}]
    whole = client.messages.create(model=model, max_tokens=100, messages=ask)
    with client.messages.stream(model=model, max_tokens=100, messages=ask) as stream:
        final = stream.get_final_message()
    assert whole.content[0].type == "text" and final.content[0].type == "text"
    assert "Tollway" not in whole.content[0].text
    assert "[REDACTED:BRAND]" in whole.content[0].text
    assert final.content[0].text == whole.content[0].text
    with (
        pytest.raises(anthropic.APIStatusError) as blocked,
        client.messages.stream(
            model=model, max_tokens=100, messages=ask, extra_headers=BLOCK_OUTPUT
        ) as stream,
    ):
        for event in stream:
            assert event.type != "message_stop", "the blocked answer was completed"
    assert "no-mock" in str(blocked.value)
