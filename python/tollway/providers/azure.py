"""Azure OpenAI: the OpenAI API under a deployment URL, with an `api-key` header.

Account config: `provider: azure-openai`, `base_url: https://<resource>.openai.azure.com`,
`api_key`, and `api_version` (default `DEFAULT_API_VERSION`); each model's `model_id` is the
deployment name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import quote

import msgspec

from tollway.providers import Endpoints, ProviderTarget

__all__ = ["DEFAULT_API_VERSION", "AzureOpenAIProvider", "deployment_urls"]

# The GA version that added `stream_options.include_usage`, which metering relies on.
DEFAULT_API_VERSION: Final = "2024-10-21"

_encode = msgspec.json.Encoder().encode


def deployment_urls(base_url: str, deployment: str, api_version: str | None) -> tuple[str, str]:
    """Chat and embeddings URLs of one deployment."""
    base = base_url.rstrip("/")
    # Accept a base URL copied with the /openai suffix from Azure's portal examples.
    base = base.removesuffix("/openai")
    root = f"{base}/openai/deployments/{quote(deployment, safe='')}"
    query = f"?api-version={quote(api_version or DEFAULT_API_VERSION, safe='')}"
    return f"{root}/chat/completions{query}", f"{root}/embeddings{query}"


@dataclass(frozen=True, slots=True)
class AzureOpenAIProvider:
    name: str = "azure-openai"
    stream_format: Literal["openai"] = "openai"

    def endpoints(self, target: ProviderTarget) -> Endpoints:
        chat, embeddings = deployment_urls(target.base_url, target.model_id, target.api_version)
        headers = {"content-type": "application/json", **dict(target.headers)}
        if target.api_key:
            headers["api-key"] = target.api_key
        return Endpoints(chat, embeddings, headers)

    def request_body(self, openai_body: dict[str, Any], model_id: str) -> bytes:
        # The deployment in the URL picks the model; Azure ignores `model` in the body.
        return _encode({**openai_body, "model": model_id})

    def response_body(
        self, status: int, body: bytes, model: str, request: dict[str, Any] | None = None
    ) -> bytes:
        return body
