"""Deterministic answers, token counts, embeddings and error bodies, precomputed where it pays."""

from __future__ import annotations

import base64
import math
import struct
import zlib
from typing import Any, Final

import msgspec

__all__ = [
    "TOOL_ARGUMENTS",
    "TOOL_ARGUMENT_FRAGMENTS",
    "TOOL_CALL_TOKENS",
    "Answers",
    "Embedder",
    "anthropic_error",
    "count_words",
    "openai_error",
]

_encode = msgspec.json.Encoder().encode

# Cycled to build answers; the full stop makes long answers read as repeated sentences.
_WORDS = ("This", "is", "a", "deterministic", "answer", "from", "the", "Tollway", "mock.")

# The arguments of every mock tool call, and the pieces a stream sends them in: joined, the
# pieces are OpenAI's `arguments` string, and they split inside the JSON, as real providers do.
TOOL_ARGUMENTS: Final = {"city": "Paris"}
TOOL_ARGUMENT_FRAGMENTS: Final = ('{"city": ', '"Paris"', "}")
# Counted like the text answers: one token per streamed piece.
TOOL_CALL_TOKENS: Final = len(TOOL_ARGUMENT_FRAGMENTS)


class Answers:
    """The answer text for every length up to `tokens`, and its stream events as bytes.

    Token i is word i of a cycled list, with a leading space after the first, so a stream's
    deltas joined give exactly the non-stream text for the same length.
    """

    __slots__ = ("_ends", "anthropic_deltas", "openai_deltas", "text", "tokens")

    def __init__(self, tokens: int) -> None:
        words = [(" " if i else "") + _WORDS[i % len(_WORDS)] for i in range(tokens)]
        self.tokens = tokens
        self.text = "".join(words)
        ends = [0]
        for w in words:
            ends.append(ends[-1] + len(w))
        self._ends = tuple(ends)
        # The tail of an OpenAI chunk after its per-request `"choices":[` prefix.
        self.openai_deltas = tuple(
            b'{"index":0,"delta":{"content":'
            + _encode(w)
            + b'},"logprobs":null,"finish_reason":null}]}\n\n'
            for w in words
        )
        self.anthropic_deltas = tuple(
            b"event: content_block_delta\n"
            b'data: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":' + _encode(w) + b"}}\n\n"
            for w in words
        )

    def length(self, limit: int | None) -> int:
        """Tokens to produce when the request caps the answer at `limit`."""
        if limit is None or limit >= self.tokens:
            return self.tokens
        return max(limit, 0)

    def text_of(self, n: int) -> str:
        return self.text[: self._ends[n]]


def count_words(content: Any) -> int:
    """Whitespace-separated words of a message content: a string or a list of parts/blocks."""
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += len(part.split())
            elif isinstance(part, dict):
                # OpenAI text parts and Anthropic text blocks carry `text`; Anthropic tool
                # results nest their own content.
                total += count_words(part.get("text")) + count_words(part.get("content"))
        return total
    return 0


class Embedder:
    """Unit vectors that depend only on the input and the dimension.

    One base vector per dimension is computed once; each input rotates it by an amount taken
    from a CRC of the input, so vectors differ between inputs at the cost of a slice. Values are
    rounded to float32 so the float and base64 encodings carry the same numbers.
    """

    __slots__ = ("_bases", "_max_cached")

    def __init__(self, max_cached: int = 64) -> None:
        self._bases: dict[int, tuple[list[float], bytes]] = {}
        self._max_cached = max_cached

    def _base(self, dim: int) -> tuple[list[float], bytes]:
        hit = self._bases.get(dim)
        if hit is not None:
            return hit
        raw = [math.sin(1.7 * j + 0.3) for j in range(dim)]
        norm = math.sqrt(sum(v * v for v in raw)) or 1.0
        packed = struct.pack(f"<{dim}f", *(v / norm for v in raw))
        base = (list(struct.unpack(f"<{dim}f", packed)), packed)
        # Bounded: a client choosing many distinct dimensions must not grow memory for ever.
        if len(self._bases) < self._max_cached:
            self._bases[dim] = base
        return base

    def vector(self, item: str | list[int], dim: int, as_base64: bool) -> list[float] | str:
        floats, packed = self._base(dim)
        key = item.encode() if isinstance(item, str) else _encode(item)
        k = zlib.crc32(key) % dim
        if as_base64:
            return base64.b64encode(packed[4 * k :] + packed[: 4 * k]).decode()
        return floats[k:] + floats[:k]


def openai_error(status: int, message: str) -> bytes:
    """OpenAI's error body for `status`."""
    if status == 429:
        kind, code = "rate_limit_error", "rate_limit_exceeded"
    elif status >= 500:
        kind, code = "server_error", "server_error"
    elif status == 401:
        kind, code = "authentication_error", "invalid_api_key"
    elif status == 403:
        kind, code = "permission_error", "permission_denied"
    elif status == 404:
        kind, code = "invalid_request_error", "not_found"
    else:
        kind, code = "invalid_request_error", f"http_{status}"
    error = {"message": message, "type": kind, "param": None, "code": code}
    return _encode({"error": error})


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, message: str) -> bytes:
    """Anthropic's error body for `status`."""
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return _encode({"type": "error", "error": {"type": kind, "message": message}})
