"""Where a provider's API lives under an account's `base_url`, written either way users do.

SDK environment variables disagree on the version segment: `ANTHROPIC_BASE_URL` is
`https://api.anthropic.com` (the SDK adds `/v1/messages`), `OPENAI_BASE_URL` is
`https://api.openai.com/v1` (the SDK adds `/chat/completions`). The join is tolerant only
where it cannot be wrong:

- Anthropic: a base whose path ends in `/v1` gets `/messages`; any other base gets
  `/v1/messages`, as the Anthropic SDK does it.
- OpenAI and OpenAI-compatible: a base with no path at all (`http://host:8000`) gets `/v1`;
  a base with a path is used as written, because OpenAI-compatible servers put their API at
  paths like `/api/v1`, `/openai/v1` or `/v1beta/openai`, where adding anything breaks them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["anthropic_messages_url", "openai_api_base"]


def _path(base_url: str) -> str:
    return urlsplit(base_url).path.rstrip("/")


def openai_api_base(base_url: str) -> str:
    """The URL `/chat/completions` and `/embeddings` are appended to."""
    base = base_url.rstrip("/")
    return base if _path(base) else f"{base}/v1"


def anthropic_messages_url(base_url: str) -> str:
    """The Messages API URL for an Anthropic base, with or without `/v1`."""
    base = base_url.rstrip("/")
    return f"{base}/messages" if _path(base).endswith("/v1") else f"{base}/v1/messages"
