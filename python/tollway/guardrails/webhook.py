"""The `webhook` guardrail: POST the OpenAI-shaped body to the configured URL and read its verdict.

The webhook answers 2xx `{"verdict": bool, "transformed": {...}?}`. Anything else (another
status, a timeout, a refused connection, a body that is not that JSON) is a guardrail error,
and the guardrail's `enforcing_strategy` decides what an error does. Error descriptions name
what went wrong, never the webhook's body, which may echo the user's text.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import aiohttp
import msgspec

from tollway.guardrails import Outcome, Strategy, Verdict, decide

__all__ = ["MAX_ANSWER_BYTES", "WebhookAnswer", "WebhookResult", "call_webhook"]

# A transformed request can be as large as a request; more than this is not an answer.
MAX_ANSWER_BYTES = 16 * 1024 * 1024

Phase = Literal["input", "output"]


class WebhookAnswer(msgspec.Struct):
    verdict: bool
    transformed: dict[str, Any] | None = None


class WebhookResult(msgspec.Struct, frozen=True):
    outcome: Outcome
    verdict: Verdict
    # The body to use instead, when the webhook passed the text and sent one.
    transformed: dict[str, Any] | None
    # What went wrong, for logs and spans: "timeout", "status 500", "invalid answer", ...
    error: str | None
    latency_ms: float


async def _ask(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout_ms: int,
) -> WebhookAnswer | str:
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_ms / 1000),
        ) as resp:
            if not 200 <= resp.status < 300:
                return f"status {resp.status}"
            if (resp.content_length or 0) > MAX_ANSWER_BYTES:
                return "answer too large"
            raw = await resp.read()
    except TimeoutError:
        return "timeout"
    except aiohttp.ClientError as e:
        return f"connection error ({type(e).__name__})"
    try:
        return msgspec.json.decode(raw, type=WebhookAnswer)
    except msgspec.DecodeError:
        return 'invalid answer (expected {"verdict": bool, "transformed": {...}})'


async def call_webhook(
    session: aiohttp.ClientSession,
    *,
    name: str,
    url: str,
    timeout_ms: int,
    strategy: Strategy | str,
    payload: Mapping[str, Any] | bytes,
    phase: Phase,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
) -> WebhookResult:
    """POSTs `payload` (the request for `input`, the response for `output`) and decides.

    `headers` come from the guardrail's config (e.g. the webhook's own auth); the guardrail's
    name and phase are sent as `x-tollway-guardrail` and `x-tollway-guardrail-phase`.
    """
    body = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
    sent = {
        **dict(headers),
        "content-type": "application/json",
        "x-tollway-guardrail": name,
        "x-tollway-guardrail-phase": phase,
    }
    started = time.perf_counter()
    answer = await _ask(session, url, body, sent, timeout_ms)
    latency_ms = (time.perf_counter() - started) * 1000
    if isinstance(answer, str):
        outcome, transformed, error = Outcome.ERROR, None, answer
    elif answer.verdict:
        outcome, transformed, error = Outcome.PASS, answer.transformed, None
    else:
        outcome, transformed, error = Outcome.FLAG, None, None
    return WebhookResult(
        outcome=outcome,
        verdict=decide(strategy, outcome),
        transformed=transformed,
        error=error,
        latency_ms=latency_ms,
    )
