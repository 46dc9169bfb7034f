"""Secrets out of everything relayed to a client: provider error bodies and headers, answers,
SSE error events. The per-config `Scrubber` (Rust, one automaton over every provider secret)
does the scanning, and `Scrubber.for_request` adds the request's own client key; this module
finds that key and scrubs the `Failed` shape.
"""

from __future__ import annotations

from tollway.engine import RequestScrubber
from tollway.proxy.responses import Failed

__all__ = ["bearer_token", "scrub_failure"]


def bearer_token(authorization: bytes | None) -> bytes | None:
    """The key of an `Authorization: Bearer <key>` header (any case of the scheme)."""
    if authorization is None or len(authorization) < 8:
        return None
    if authorization[:7].lower() != b"bearer ":
        return None
    return authorization[7:].strip() or None


def scrub_failure(scrubber: RequestScrubber, failed: Failed) -> Failed:
    """A provider failure with every secret removed from its body and relayed headers."""
    body = scrubber.scrub(failed.body)
    headers = [(k, scrubber.scrub(v)) for k, v in failed.headers]
    return Failed(failed.status, body, headers)
