"""Secrets out of everything relayed to a client: provider error bodies and headers, answers,
SSE error events. The per-config `Scrubber` (Rust, one automaton over every provider secret)
does the scanning, and `Scrubber.for_request` adds the request's own client key (read from its
`Authorization` header by the core, as admission reads it); this module scrubs the `Failed`
shape.
"""

from __future__ import annotations

from tollway.engine import RequestScrubber
from tollway.proxy.responses import Failed

__all__ = ["scrub_failure"]


def scrub_failure(scrubber: RequestScrubber, failed: Failed) -> Failed:
    """A provider failure with every secret removed from its body and relayed headers."""
    body = scrubber.scrub(failed.body)
    headers = [(k, scrubber.scrub(v)) for k, v in failed.headers]
    return Failed(failed.status, body, headers)
