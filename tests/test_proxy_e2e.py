"""End to end: the real `openai` client against a real `tollway serve` and the mock upstream."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

import httpx
import openai
import pytest
from conftest import CLIENT_KEY, LIMITED_KEY, PROVIDER_KEY, Server

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello to the gateway"}]


@pytest.fixture
def client(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)


def mock_requests(mock: Server) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = httpx.get(f"{mock.url}/_mock/requests").json()
    return got


def last_upstream_request(mock: Server, path: str) -> dict[str, Any]:
    return next(r for r in reversed(mock_requests(mock)) if r["path"] == path)


def test_non_stream_and_stream_give_the_same_text_and_usage(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="mock/small", messages=MESSAGES)
    text = whole.choices[0].message.content
    assert text
    assert whole.usage is not None and whole.usage.completion_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    chunks = list(
        client.chat.completions.create(
            model="mock/small",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == whole.usage.completion_tokens


def test_provider_sees_rewritten_model_and_provider_key_only(
    client: openai.OpenAI, mock_upstream: Server
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="mock/small",
        messages=MESSAGES,
        extra_headers={"X-TFY-METADATA": '{"project_id": "p1"}', "x-tfy-custom": "secret-ish"},
    )
    assert raw.headers["x-tfy-resolved-model"] == "mock/small"
    assert raw.headers["x-request-id"]
    assert "model;dur=" in raw.headers["server-timing"]
    seen = last_upstream_request(mock_upstream, "/v1/chat/completions")
    assert seen["body"]["model"] == "gpt-4o-mini"
    assert seen["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert seen["headers"]["x-account-header"] == "from-config"
    flat = repr(seen)
    assert CLIENT_KEY not in flat
    assert not any(h.startswith("x-tfy") for h in seen["headers"])


def test_client_request_id_is_echoed(gateway: Server) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {CLIENT_KEY}", "x-request-id": "req-42"},
        json={"model": "mock/small", "messages": MESSAGES},
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "req-42"


def test_embeddings_with_the_clients_default_base64_and_floats(
    client: openai.OpenAI, mock_upstream: Server
) -> None:
    got = client.embeddings.create(model="mock/text-embedding-3-small", input=["a", "b"])
    assert [d.index for d in got.data] == [0, 1]
    assert all(len(d.embedding) > 0 and isinstance(d.embedding[0], float) for d in got.data)
    seen = last_upstream_request(mock_upstream, "/v1/embeddings")
    assert seen["body"]["encoding_format"] == "base64"
    assert seen["body"]["model"] == "text-embedding-3-small"
    floats = client.embeddings.create(
        model="mock/text-embedding-3-small", input="a", encoding_format="float"
    )
    raw = base64.b64decode(
        httpx.post(
            f"{client.base_url}embeddings",
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
            json={
                "model": "mock/text-embedding-3-small",
                "input": "a",
                "encoding_format": "base64",
            },
        ).json()["data"][0]["embedding"]
    )
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(floats.data[0].embedding)


def test_models_lists_what_each_key_may_use(gateway: Server) -> None:
    full = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY)
    limited = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=LIMITED_KEY)
    all_ids = {m.id for m in full.models.list()}
    assert {"mock/small", "mock/gpt-4o", "dead/gpt-4o"} <= all_ids
    assert {m.id for m in limited.models.list()} == {"mock/small", "mock/text-embedding-3-small"}
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="wrong-key-123").models.list()


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    err: dict[str, Any] = body["error"]
    return err


@pytest.mark.parametrize(
    ("key", "model", "headers", "exc", "code"),
    [
        ("wrong-key-123", "mock/small", {}, openai.AuthenticationError, "invalid_api_key"),
        (LIMITED_KEY, "mock/gpt-4o", {}, openai.PermissionDeniedError, "model_not_allowed"),
        (CLIENT_KEY, "nobody/model", {}, openai.NotFoundError, "model_not_found"),
        (
            CLIENT_KEY,
            "mock/small",
            {"X-TFY-METADATA": '{"project": 7}'},
            openai.BadRequestError,
            "invalid_metadata",
        ),
        (
            CLIENT_KEY,
            "mock/small",
            {"X-TFY-METADATA": '{"p": "' + "x" * 129 + '"}'},
            openai.BadRequestError,
            "invalid_metadata",
        ),
    ],
)
def test_refusals_have_status_and_openai_error_body(
    gateway: Server, key: str, model: str, headers: dict[str, str], exc: type, code: str
) -> None:
    c = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    with pytest.raises(exc) as info:
        c.chat.completions.create(model=model, messages=MESSAGES, extra_headers=headers)
    assert error_of(info.value)["code"] == code
    assert key not in info.value.response.text


def post(gateway: Server, body: bytes | dict[str, Any], **headers: str) -> httpx.Response:
    h = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json", **headers}
    if isinstance(body, dict):
        return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=h, timeout=30)
    return httpx.post(f"{gateway.url}/v1/chat/completions", content=body, headers=h, timeout=30)


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        ({"messages": MESSAGES}, "model", "'model' is required"),
        ({"model": 5, "messages": MESSAGES}, "model", "'model' must be a non-empty string"),
        ({"model": "mock/small"}, "messages", "'messages' is required"),
        ({"model": "mock/small", "messages": "hi"}, "messages", "must be a non-empty list"),
        ({"model": "mock/small", "messages": MESSAGES, "stream": "yes"}, "stream", "true or false"),
        (
            {"model": "mock/small", "messages": MESSAGES, "api_base": "http://169.254.169.254/"},
            "api_base",
            "the gateway decides where requests go",
        ),
        (
            {"model": "mock/small", "messages": MESSAGES, "base_url": "http://evil.example/"},
            "base_url",
            "the gateway decides",
        ),
    ],
)
def test_bad_bodies_are_400_naming_the_field(
    gateway: Server, mock_upstream: Server, body: bytes | dict[str, Any], param: str, needle: str
) -> None:
    before = len(mock_requests(mock_upstream))
    r = post(gateway, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and needle in err["message"]
    assert len(mock_requests(mock_upstream)) == before, "a bad request reached the provider"


def test_body_over_the_limit_is_413_without_reading_it(gateway: Server) -> None:
    big = b'{"model": "mock/small", "messages": [{"role": "user", "content": "' + b"x" * 70_000
    r = post(gateway, big + b'"}]}')
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks() -> Any:  # no Content-Length: the limit holds for chunked bodies too
        yield big
        yield b'"}]}'

    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=chunks(),
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert r.status_code == 413


def test_missing_key_is_401_before_the_body_is_read(gateway: Server) -> None:
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "mock/small"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_upstream_connection_failure_is_502_and_timeout_is_504(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="dead/gpt-4o", messages=MESSAGES)
    assert info.value.status_code == 502
    assert error_of(info.value)["code"] == "upstream_connection_error"
    assert "127.0.0.1" not in info.value.response.text, "no upstream address in errors"

    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="mock/mock-hang",
            messages=MESSAGES,
            extra_headers={"x-tfy-request-timeout": "300"},
        )
    assert info.value.status_code == 504 and error_of(info.value)["code"] == "upstream_timeout"
    assert time.monotonic() - started < 5


def test_provider_errors_pass_through_but_credential_failures_do_not(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="mock/mock-status-400", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="mock/mock-status-429", messages=MESSAGES)
    assert info.value.response.headers.get("retry-after") == "1"
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="mock/mock-status-503", messages=MESSAGES)
    assert info.value.status_code == 503
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="mock/mock-status-401", messages=MESSAGES)
    assert info.value.status_code == 502
    assert error_of(info.value)["code"] == "upstream_auth_error"
    assert PROVIDER_KEY not in info.value.response.text


def test_mid_stream_reset_gives_the_client_an_error_not_a_short_answer(
    client: openai.OpenAI,
) -> None:
    stream = client.chat.completions.create(
        model="mock/mock-reset-mid", messages=MESSAGES, stream=True
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_client_disconnect_cancels_the_upstream_stream(
    gateway: Server, mock_upstream: Server
) -> None:
    httpx.delete(f"{mock_upstream.url}/_mock/requests")
    body = {"model": "mock/mock-hang", "messages": MESSAGES, "stream": True}
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.stream(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
            timeout=1.0,
        ) as r,
    ):
        r.read()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        seen = [r for r in mock_requests(mock_upstream) if r["path"] == "/v1/chat/completions"]
        if seen and seen[-1].get("disconnected"):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the mock never saw the upstream call close: {seen}")


def test_unknown_path_and_health(gateway: Server) -> None:
    r = httpx.get(f"{gateway.url}/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200
    assert httpx.get(f"{gateway.url}/readyz").json() == {"status": "ready"}
    r = httpx.get(f"{gateway.url}/v1/chat/completions")
    assert r.status_code == 405
