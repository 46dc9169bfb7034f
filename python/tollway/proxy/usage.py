"""Usage the provider did not report, counted locally: a request is never charged 0 because
the answer's `usage` was missing or unreadable (an estimate is marked as one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from tollway.engine import SseMeter, count_prompt_tokens, count_tokens
from tollway.telemetry.observe import RequestLog

__all__ = [
    "USAGE_ESTIMATED",
    "estimate_usage",
    "prompt_as_sent",
    "prompt_estimate",
    "stream_usage",
]

_encode = msgspec.json.Encoder().encode

# On an answer whose usage the gateway counted itself.
USAGE_ESTIMATED = (b"x-tfy-usage-estimated", b"true")


def prompt_estimate(endpoint: str, req: dict[str, Any], raw: bytes, model: str) -> int:
    """Input tokens of the request (`raw`: its body as sent) by the local tokenizer of `model`
    (the target's), at least 1."""
    if endpoint == "chat":
        return max(count_prompt_tokens(raw, model), 1)
    items = req.get("input")
    if not isinstance(items, list) or (items and isinstance(items[0], int)):
        items = [items]
    total = 0
    for item in items:
        if isinstance(item, str):
            total += count_tokens(item, model)
        elif isinstance(item, list):
            total += len(item)  # token ids
    return max(total, 1)


def prompt_as_sent(endpoint: str, req: dict[str, Any], raw: bytes | None, log: RequestLog) -> int:
    """Input tokens of the request as sent (`raw`, or the rewritten `req` when None), by the
    tokenizer of the target that answered (the last attempt's)."""
    model = log.attempts[-1].plan.upstream.model_id if log.attempts else req.get("model")
    body = raw if raw is not None else _encode(req)
    return prompt_estimate(endpoint, req, body, str(model or ""))


def estimate_usage(
    endpoint: str, prompt: Callable[[], int], answer_text: str, model: str
) -> tuple[int, int, int, int]:
    """(input, cached input, output, cache write) for an answer without readable usage;
    `prompt()` gives the request's input tokens as sent, `model` the target's tokenizer."""
    output = count_tokens(answer_text, model) if endpoint != "embeddings" else 0
    return prompt(), 0, output, 0


def stream_usage(
    meter: SseMeter, prompt_tokens: Callable[[], int], log: RequestLog
) -> tuple[int, int, int, int]:
    """A stream's usage as the provider reported it, or (cut short) the local count of what
    was seen; `log` learns whether it is an estimate."""
    prompt = meter.prompt_tokens
    if prompt is None:
        prompt = prompt_tokens()
    log.usage_estimated = meter.usage_estimated
    written = meter.cache_creation_tokens or 0
    return (prompt, meter.cached_tokens or 0, meter.output_tokens, written)
