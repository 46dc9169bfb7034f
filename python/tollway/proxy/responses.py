"""Provider answers as the gateway reads and reshapes them: usage, ids and finish reasons of
a non-streamed answer (one typed msgspec decode), OpenAI error bodies for provider
failures, and the mapping of transport failures to 502/504.
"""

from __future__ import annotations

from time import perf_counter

import msgspec

from tollway.engine import Outcome
from tollway.errors import error_body

__all__ = [
    "CANCELLED",
    "OUTCOME",
    "OUTCOME_NAMES",
    "Failed",
    "answer_of",
    "elapsed_ms",
    "error_response",
    "first_message",
    "retry_after_s",
]

# settle() codes for failures without an HTTP status, by the upstream client's failure kind;
# the codes and their names are the core's (`Outcome`).
OUTCOME = {
    "connect": int(Outcome.CONNECT),
    "timeout": int(Outcome.TIMEOUT),
    "broken": int(Outcome.BROKEN),
}
OUTCOME_NAMES = {int(o): o.error_type for o in (Outcome.CONNECT, Outcome.TIMEOUT, Outcome.BROKEN)}
# The client went away (nginx's 499): the request is settled with what it was sent.
CANCELLED = int(Outcome.CANCELLED)

_decode = msgspec.json.Decoder().decode


class _PromptDetails(msgspec.Struct):
    cached_tokens: int = 0


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None


class _Choice(msgspec.Struct):
    finish_reason: str | None = None


class _Answer(msgspec.Struct):
    id: str = ""
    model: str = ""
    choices: list[_Choice] = []
    usage: _Usage | None = None


_decode_answer = msgspec.json.Decoder(_Answer).decode


def answer_of(body: bytes) -> tuple[tuple[int, int, int], str, str, list[str]]:
    """Usage (input, cached input, output), id, model and finish reasons of a non-streamed
    answer (embeddings have no choices); zeros and empties when absent."""
    try:
        a = _decode_answer(body)
    except msgspec.DecodeError:
        return (0, 0, 0), "", "", []
    reasons = [c.finish_reason for c in a.choices if c.finish_reason]
    u = a.usage
    if u is None:
        return (0, 0, 0), a.id, a.model, reasons
    cached = u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else 0
    return (u.prompt_tokens, cached, u.completion_tokens), a.id, a.model, reasons


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


class Failed(msgspec.Struct):
    """An attempt's failure as the client would see it if nothing else works."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


class _Message(msgspec.Struct):
    content: str | None = None


class _MessageChoice(msgspec.Struct):
    message: _Message | None = None


class _Choices(msgspec.Struct):
    choices: list[_MessageChoice] = []


_decode_choices = msgspec.json.Decoder(_Choices).decode


def first_message(body: bytes) -> str | None:
    """The first choice's text, for traces that keep request data."""
    try:
        choices = _decode_choices(body).choices
    except msgspec.DecodeError:
        return None
    message = choices[0].message if choices else None
    return message.content if message else None


def elapsed_ms(t0: float) -> float:
    """Milliseconds since a `perf_counter()` reading."""
    return (perf_counter() - t0) * 1000
