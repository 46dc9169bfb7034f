"""Which `Provider` speaks for a `provider-account`'s `provider` field."""

from __future__ import annotations

from tollway.providers import Provider

__all__ = ["provider_for"]


def provider_for(name: str) -> Provider:
    """The provider of a `provider-account`'s `provider` field."""
    # Imported here so loading one provider does not load them all.
    if name in ("openai", "openai-compatible"):
        from tollway.providers.openai import OpenAIProvider

        return OpenAIProvider(name)
    if name == "azure-openai":
        from tollway.providers.azure import AzureOpenAIProvider

        return AzureOpenAIProvider()
    if name == "anthropic":
        from tollway.providers.anthropic import AnthropicProvider

        return AnthropicProvider()
    raise ValueError(f"unknown provider {name!r}")
