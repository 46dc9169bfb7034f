"""JSON decode/encode of chat bodies: msgspec (untyped and typed) against stdlib json and orjson."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

try:
    import orjson
except ImportError:  # not a dependency: shown for comparison when present
    orjson = None


class Message(msgspec.Struct, omit_defaults=True):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatRequest(msgspec.Struct, omit_defaults=True):
    """The fields the gateway reads; everything else is passed through untouched."""

    model: str
    messages: list[Message]
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    user: str | None = None
    stream_options: dict[str, Any] | None = None


DECODE_TYPED = msgspec.json.Decoder(ChatRequest)
DECODE_ANY = msgspec.json.Decoder()
ENCODE = msgspec.json.Encoder()

DECODERS: dict[str, Callable[[bytes], Any]] = {
    "stdlib-json": json.loads,
    "msgspec": DECODE_ANY.decode,
    "msgspec-typed": DECODE_TYPED.decode,
}
ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "stdlib-json": lambda obj: json.dumps(obj, separators=(",", ":")).encode(),
    "msgspec": ENCODE.encode,
}
if orjson is not None:
    DECODERS["orjson"] = orjson.loads
    ENCODERS["orjson"] = orjson.dumps


@pytest.mark.parametrize("size", ["small", "long"])
@pytest.mark.parametrize("library", list(DECODERS))
def test_decode_chat_request(
    benchmark: Any,
    library: str,
    size: str,
    small_chat: dict[str, Any],
    long_chat: dict[str, Any],
) -> None:
    raw = msgspec.json.encode(small_chat if size == "small" else long_chat)
    benchmark.group = f"decode chat request ({size}, {len(raw)} B)"
    decoded = benchmark(DECODERS[library], raw)
    model = decoded.model if isinstance(decoded, ChatRequest) else decoded["model"]
    assert model == "prod/engineering-assistant"


@pytest.mark.parametrize("library", list(ENCODERS))
def test_encode_chat_response(benchmark: Any, library: str, completion: dict[str, Any]) -> None:
    benchmark.group = "encode chat response"
    raw = benchmark(ENCODERS[library], completion)
    assert msgspec.json.decode(raw) == completion


@pytest.mark.parametrize("library", list(ENCODERS))
def test_reencode_with_model_rewritten(
    benchmark: Any, library: str, small_chat: dict[str, Any]
) -> None:
    """The proxy's real job: decode, replace the model with the provider's id, encode again."""
    raw = msgspec.json.encode(small_chat)
    decode = DECODERS["msgspec" if library == "msgspec" else library]
    encode = ENCODERS[library]

    def rewrite() -> bytes:
        body = decode(raw)
        body["model"] = "gpt-4o-mini"
        return encode(body)

    benchmark.group = "decode + rewrite model + encode (small)"
    assert b'"gpt-4o-mini"' in benchmark(rewrite)
