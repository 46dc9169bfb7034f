"""Provider answers as the gateway reads and reshapes them: usage, ids and finish reasons of
a non-streamed answer (one typed msgspec decode), OpenAI error bodies for provider
failures, and the mapping of transport failures to 502/504.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

import msgspec

from tollway.engine import Outcome
from tollway.errors import error_body
from tollway.upstream import UpstreamError

if TYPE_CHECKING:
    from tollway.engine import Upstream
    from tollway.upstream import UpstreamResponse

__all__ = [
    "CANCELLED",
    "ERROR_TYPES",
    "OUTCOME",
    "OUTCOME_NAMES",
    "UNREADABLE",
    "Answer",
    "Failed",
    "answer_of",
    "elapsed_ms",
    "error_response",
    "read_failure",
    "retry_after_s",
]

# settle() codes for failures without an HTTP status, by the upstream client's failure kind;
# the codes and their names are the core's (`Outcome`). An oversized or unreadable answer is
# a broken exchange to the target's health.
OUTCOME = {
    "connect": int(Outcome.CONNECT),
    "timeout": int(Outcome.TIMEOUT),
    "broken": int(Outcome.BROKEN),
    "too_large": int(Outcome.BROKEN),
    "invalid": int(Outcome.BROKEN),
}
OUTCOME_NAMES = {int(o): o.error_type for o in (Outcome.CONNECT, Outcome.TIMEOUT, Outcome.BROKEN)}
# Attempt error types (metrics, spans) of the failures that share a settle code.
ERROR_TYPES = {"too_large": "response_too_large", "invalid": "invalid_response"}
# The client went away (nginx's 499): the request is settled with what it was sent.
CANCELLED = int(Outcome.CANCELLED)

# What a provider translation raises on a body that is not what its API sends.
UNREADABLE = (msgspec.MsgspecError, ValueError, TypeError, AttributeError, KeyError)

_decode = msgspec.json.Decoder().decode


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    # Not OpenAI's: Anthropic's cache writes, as the Anthropic translation reports them.
    cache_creation_input_tokens: int = 0


class _Message(msgspec.Struct):
    # Text, or content parts from providers that answer in parts.
    content: str | list[Any] | None = None
    # Raw: kept as the provider's JSON (an estimate counts it); empty when absent.
    tool_calls: msgspec.Raw = msgspec.Raw()


class _Choice(msgspec.Struct):
    finish_reason: str | None = None
    message: _Message | None = None


class _Answer(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    choices: list[_Choice] | None = None  # chat answers
    data: msgspec.Raw = msgspec.Raw()  # embeddings answers (a list), not decoded
    usage: _Usage | None = None


_decode_answer = msgspec.json.Decoder(_Answer).decode


class Answer(msgspec.Struct):
    """What the gateway reads of a non-streamed answer. `usage` is (input, cached input,
    output, cache write), None when the provider did not report it readably; `text` is the
    answer's text and tool calls, for a local token estimate and traces."""

    usage: tuple[int, int, int, int] | None
    id: str
    model: str
    finish_reasons: list[str]
    text: str
    # Each choice's message text (None where it is not text), for output guardrails.
    contents: list[str | None] | None = None


def answer_of(body: bytes, chat: bool) -> Answer | None:
    """The one decode of a non-streamed answer (after provider translation); None when it is
    not an answer at all (HTML, truncated or mistyped JSON, no `choices`/`data`)."""
    try:
        a = _decode_answer(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if a.choices is None if chat else not bytes(a.data).startswith(b"["):
        return None
    reasons, texts = [], []
    contents: list[str | None] = []
    for c in a.choices or ():
        if c.finish_reason:
            reasons.append(c.finish_reason)
        m = c.message
        content = m.content if m is not None and type(m.content) is str else None
        contents.append(content)
        if content is not None:
            texts.append(content)
        if m is not None and m.tool_calls:
            texts.append(bytes(m.tool_calls).decode("utf-8", "replace"))
    usage = None
    u = a.usage
    if (
        u is not None
        and u.prompt_tokens is not None
        and (u.completion_tokens is not None or not chat)
    ):
        details = u.prompt_tokens_details
        cached = (details.cached_tokens or 0) if details else 0
        written = u.cache_creation_input_tokens or 0
        usage = (u.prompt_tokens, cached, u.completion_tokens or 0, written)
    return Answer(usage, a.id or "", a.model or "", reasons, "".join(texts), contents)


def retry_after_s(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def error_response(
    status: int, body: bytes, target: str, retry_after: str | None
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """What the client sees for a non-2xx answer from the provider (already OpenAI-shaped
    by the provider translation where it speaks another API)."""
    if status in (401, 403):
        # The provider refused *our* credentials; its message may quote part of the key.
        msg = f"The provider rejected the gateway's credentials for '{target}'"
        return 502, error_body(msg, "api_error", "upstream_auth_error", None), []
    extra = [(b"retry-after", retry_after.encode())] if status == 429 and retry_after else []
    try:
        parsed = _decode(body)
        if type(parsed) is dict and type(parsed.get("error")) is dict:
            return status, body, extra
    except msgspec.DecodeError:
        pass
    msg = f"The provider for '{target}' answered HTTP {status}"
    return status, error_body(msg, "api_error", "upstream_error", None), extra


async def read_failure(
    resp: UpstreamResponse, up: Upstream, limit: int, req: dict[str, Any]
) -> Failed:
    """A non-2xx answer as the client would see it (OpenAI-shaped; secrets still in): read
    up to `limit` bytes and translated; unreadable or not the provider's error shape, a
    generic message."""
    try:
        body = await resp.read(limit)
        body = up.provider.response_body(resp.status, body, up.model_id, req)
    except (UpstreamError, *UNREADABLE):
        body = b""
    return Failed(*error_response(resp.status, body, up.name, resp.header("retry-after")))


class Failed(msgspec.Struct):
    """An attempt's failure as the client would see it if nothing else works."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


def elapsed_ms(t0: float) -> float:
    """Milliseconds since a `perf_counter()` reading."""
    return (perf_counter() - t0) * 1000


# What an ingress (a client API other than chat) reads of an answer itself, if anything.
IngressAnswer = Callable[[bytes], "tuple[tuple[int, int, int, int], str, str, list[str]] | None"]


async def read_answer(
    resp: UpstreamResponse,
    up: Upstream,
    req: dict[str, Any],
    chat: bool,
    ingress_answer: IngressAnswer | None,
    limit: int,
) -> tuple[bytes, bytes, Answer] | str:
    """A 2xx answer read once: (the provider's body, its chat-shaped translation, what it
    says), or the failure kind (`invalid` when it is not the answer its API promises)."""
    try:
        raw = await resp.read(limit)
        body = up.provider.response_body(resp.status, raw, up.model_id, req)
        ingressed = None if ingress_answer is None else ingress_answer(body)
        answer = answer_of(body, chat) if ingressed is None else Answer(*ingressed, text="")
    except UpstreamError as e:
        return e.kind
    except UNREADABLE:
        return "invalid"  # a translated provider's 2xx that is not the JSON its API promises
    return "invalid" if answer is None else (raw, body, answer)
