"""Provider base URLs in both conventions reach the same API (issue 15, item 9).

An Anthropic `base_url` written as `ANTHROPIC_BASE_URL` is (`https://api.anthropic.com`) or
with `/v1` both reach `/v1/messages`; an OpenAI-compatible base with or without `/v1` both
reach `/v1/chat/completions`; a base with another path is used as written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import CLIENT_KEY, Gateways, Server, mock_server

from tollway.providers.urls import anthropic_messages_url, openai_api_base

# (account, provider, base path after the mock's origin, path the mock must see)
ACCOUNTS = [
    ("ant-root", "anthropic", "", "/v1/messages"),
    ("ant-v1", "anthropic", "/v1", "/v1/messages"),
    ("ant-slash", "anthropic", "/v1/", "/v1/messages"),
    ("oai-root", "openai-compatible", "", "/v1/chat/completions"),
    ("oai-root-slash", "openai-compatible", "/", "/v1/chat/completions"),
    ("oai-v1", "openai-compatible", "/v1", "/v1/chat/completions"),
]


@pytest.fixture(scope="module")
def mock() -> Iterator[Server]:
    with mock_server() as server:
        yield server


def config(mock: str) -> str:
    accounts = "".join(
        f"""---
type: provider-account
name: {name}
provider: {provider}
base_url: {mock}{path}
api_key: sk-test-provider
models: [{"claude-haiku-4-5" if provider == "anthropic" else "gpt-4o-mini"}]
"""
        for name, provider, path, _ in ACCOUNTS
    )
    return f"""type: gateway-keys
keys: [{{name: client, key: {CLIENT_KEY}, subject: "user:alice"}}]
{accounts}"""


@pytest.fixture(scope="module")
def client(mock: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    gateways = Gateways(tmp_path_factory.mktemp("base-urls"))
    try:
        gw = gateways.start(config(mock.url))
        yield openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    finally:
        gateways.close()


def last_path(mock: Server) -> str:
    seen: list[dict[str, Any]] = httpx.get(f"{mock.url}/_mock/requests").json()
    return str(seen[-1]["path"])


@pytest.mark.parametrize(("name", "provider", "path", "reached"), ACCOUNTS, ids=lambda v: v)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_both_spellings_reach_the_api(
    client: openai.OpenAI,
    mock: Server,
    name: str,
    provider: str,
    path: str,
    reached: str,
    stream: bool,
) -> None:
    model = f"{name}/{'claude-haiku-4-5' if provider == 'anthropic' else 'gpt-4o-mini'}"
    messages: Any = [{"role": "user", "content": "hello"}]
    if stream:
        chunks = client.chat.completions.create(model=model, messages=messages, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        answer = client.chat.completions.create(model=model, messages=messages)
        text = answer.choices[0].message.content or ""
    assert text
    assert last_path(mock) == reached


def test_embeddings_follow_the_same_rule(client: openai.OpenAI, mock: Server) -> None:
    client.embeddings.create(model="oai-root/gpt-4o-mini", input="hello")
    assert last_path(mock) == "/v1/embeddings"


@pytest.mark.parametrize(
    ("base", "want"),
    [
        ("https://api.anthropic.com", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/v1", "https://api.anthropic.com/v1/messages"),
        ("https://proxy.example/anthropic", "https://proxy.example/anthropic/v1/messages"),
        ("https://proxy.example/anthropic/v1", "https://proxy.example/anthropic/v1/messages"),
    ],
)
def test_anthropic_join(base: str, want: str) -> None:
    assert anthropic_messages_url(base) == want


@pytest.mark.parametrize(
    ("base", "want"),
    [
        ("https://api.openai.com", "https://api.openai.com/v1"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("https://api.groq.com/openai/v1", "https://api.groq.com/openai/v1"),
        ("https://openrouter.ai/api/v1/", "https://openrouter.ai/api/v1"),
        (
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "https://generativelanguage.googleapis.com/v1beta/openai",
        ),
    ],
)
def test_openai_join(base: str, want: str) -> None:
    assert openai_api_base(base) == want
