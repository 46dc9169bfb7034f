"""Content guardrails on the OpenAI Responses API (`POST /v1/responses`) through `tollway serve`
with the real `openai` client's `responses` API: input guardrails read and redact `input` (a
string, or items with `input_text` parts) and `instructions`; output guardrails check and
redact the answer's `output_text`, whole and streamed."""

from __future__ import annotations

from typing import Any

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
