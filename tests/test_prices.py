"""Prices through the engine: each usage shape (OpenAI, Anthropic, Gemini) is charged with the
bundled table's cache rates, Anthropic cache writes apart; per-model overrides still win."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from tollway.engine import Engine, SseMeter
from tollway.providers.anthropic import from_anthropic_response
from tollway.proxy.responses import answer_of

TABLE = json.loads(
    (Path(__file__).parent.parent / "rust/tollway-core/data/prices.json").read_text()
)["models"]
KEY = "price-test-key-0123456789"


def engine(provider: str, model_id: str, extra: str = "") -> Engine:
    models = [json.loads(extra)] if extra else [model_id]
    account = {"type": "provider-account", "name": "a", "provider": provider,
               "base_url": "http://127.0.0.1:9/v1", "api_key": "k", "models": models}  # fmt: skip
    keys = {"type": "gateway-keys", "keys": [{"name": "k", "key": KEY, "subject": "user:a"}]}
    items = [{"source": "t", "doc": d} for d in (account, keys)]
    return Engine(msgspec.json.encode(items))


def charge(e: Engine, model: str, usage: tuple[int, int, int], written: int = 0) -> float:
    adm = e.admit(f"Bearer {KEY}".encode(), model)
    assert not hasattr(adm, "status"), adm
    return e.settle(adm, [(0, 200, 10.0, usage[2])], usage, written)  # type: ignore[arg-type]


def test_openai_cached_input_at_its_rate() -> None:
    p = TABLE["gpt-4o"]
    usd = charge(engine("openai", "gpt-4o"), "a/gpt-4o", (1000, 400, 500))
    want = (600 * p["input"] + 400 * p["cached_input"] + 500 * p["output"]) / 1e6
    assert usd == pytest.approx(want)


def test_anthropic_cache_reads_and_writes_at_their_rates() -> None:
    p = TABLE["claude-3-5-sonnet"]
    # What the Anthropic answer says, read the way the gateway reads it.
    body = msgspec.json.encode(
        {"id": "msg_1", "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
         "usage": {"input_tokens": 100, "cache_read_input_tokens": 2000,
                   "cache_creation_input_tokens": 1000, "output_tokens": 50}}
    )  # fmt: skip
    answer = answer_of(from_anthropic_response(body, "claude"), chat=True)
    assert answer is not None
    usage = answer.usage
    assert usage == (3100, 2000, 50, 1000)
    e = engine("anthropic", "claude-3-5-sonnet-20241022")
    usd = charge(e, "a/claude-3-5-sonnet-20241022", usage[:3], usage[3])
    want = (
        100 * p["input"] + 2000 * p["cached_input"] + 1000 * p["cache_write"] + 50 * p["output"]
    ) / 1e6
    assert usd == pytest.approx(want)
    assert p["cache_write"] > p["input"] > p["cached_input"]


def test_anthropic_stream_carries_cache_writes() -> None:
    meter = SseMeter("anthropic", "claude")
    start = {"type": "message_start", "message": {"id": "m", "usage": {
        "input_tokens": 10, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 20,
        "output_tokens": 1}}}  # fmt: skip
    meter.feed(b"event: message_start\ndata: " + msgspec.json.encode(start) + b"\n\n")
    assert (meter.prompt_tokens, meter.cached_tokens, meter.cache_creation_tokens) == (60, 30, 20)


def test_gemini_cached_content_at_its_rate() -> None:
    p = TABLE["gemini-2.5-flash"]
    e = engine("openai-compatible", "gemini-2.5-flash")
    usd = charge(e, "a/gemini-2.5-flash", (1000, 800, 10))
    assert usd == pytest.approx(
        (200 * p["input"] + 800 * p["cached_input"] + 10 * p["output"]) / 1e6
    )


def test_overrides_keep_working() -> None:
    extra = '{"name": "gpt-4o", "input_cost_per_million": 1.0, "output_cost_per_million": 2.0}'
    usd = charge(engine("openai", "gpt-4o", extra), "a/gpt-4o", (1000, 500, 1000))
    assert usd == pytest.approx((1000 * 1.0 + 1000 * 2.0) / 1e6)
