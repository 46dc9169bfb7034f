"""OpenAI and OpenAI-compatible upstreams: the client's body with the target's model id.

Named presets (`mistral`, `groq`, `together`, `fireworks`, `deepseek`, `openrouter`, `vllm`,
`ollama`, `lm-studio`) speak the same API from their own base URL (the Rust config fills it in
when `base_url` is absent) with a few quirks, applied here: fields a server rejects are renamed
or dropped before the body is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec

from tollway.providers import Endpoints, ProviderTarget
from tollway.providers.urls import openai_api_base

__all__ = ["PRESETS", "OpenAIProvider", "Quirks", "ask_for_usage"]

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Quirks:
    """How a preset's API differs from OpenAI's in what it accepts."""

    # Request fields renamed (OpenAI name -> the server's), when the server's is not set.
    renames: tuple[tuple[str, str], ...] = ()
    # Request fields the server refuses (strict schemas answer 422 to unknown fields).
    drop: frozenset[str] = field(default_factory=frozenset)
    # `tool_choice: "required"` under the server's name for it.
    required_tool_choice: str = "required"

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        for old, new in self.renames:
            if old in body:
                value = body.pop(old)
                body.setdefault(new, value)
        for name in self.drop & body.keys():
            del body[name]
        if body.get("tool_choice") == "required" and self.required_tool_choice != "required":
            body["tool_choice"] = self.required_tool_choice
        return body


_MAX_TOKENS = (("max_completion_tokens", "max_tokens"),)

PRESETS: Final[dict[str, Quirks]] = {
    # Mistral's schema forbids unknown fields; it sends usage in the last chunk unasked.
    "mistral": Quirks(
        renames=(*_MAX_TOKENS, ("seed", "random_seed")),
        drop=frozenset(
            ("stream_options", "user", "store", "metadata", "logit_bias", "service_tier")
        ),
        required_tool_choice="any",
    ),
    "groq": Quirks(drop=frozenset(("logit_bias", "logprobs", "top_logprobs", "store"))),
    "together": Quirks(renames=_MAX_TOKENS),
    "fireworks": Quirks(renames=_MAX_TOKENS, drop=frozenset(("store", "metadata"))),
    "deepseek": Quirks(renames=_MAX_TOKENS, drop=frozenset(("store", "metadata", "seed"))),
    "openrouter": Quirks(),
    "vllm": Quirks(drop=frozenset(("store", "metadata", "service_tier"))),
    "ollama": Quirks(renames=_MAX_TOKENS, drop=frozenset(("store", "metadata"))),
    "lm-studio": Quirks(renames=_MAX_TOKENS, drop=frozenset(("store", "metadata"))),
}
_NONE: Final = Quirks()


def ask_for_usage(openai_body: dict[str, Any]) -> bool:
    """Makes a streamed request ask for the usage chunk; returns whether the client had asked
    (if not, the meter strips that chunk: `SseMeter(..., strip_usage=not asked)`)."""
    options = openai_body.get("stream_options")
    asked = isinstance(options, dict) and options.get("include_usage") is True
    if not asked:
        openai_body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    return asked


@dataclass(frozen=True, slots=True)
class OpenAIProvider:
    name: str = "openai"
    stream_format: Literal["openai"] = "openai"
    quirks: Quirks | None = None

    def __post_init__(self) -> None:
        if self.quirks is None:
            object.__setattr__(self, "quirks", PRESETS.get(self.name, _NONE))

    def endpoints(self, target: ProviderTarget) -> Endpoints:
        base = openai_api_base(target.base_url)
        headers = {"content-type": "application/json", **dict(target.headers)}
        if target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        return Endpoints(f"{base}/chat/completions", f"{base}/embeddings", headers)

    def request_body(self, openai_body: dict[str, Any], model_id: str) -> bytes:
        body = {**openai_body, "model": model_id}
        if self.quirks is not None and self.quirks is not _NONE:
            body = self.quirks.apply(body)
        return _encode(body)

    def response_body(
        self, status: int, body: bytes, model: str, request: dict[str, Any] | None = None
    ) -> bytes:
        return body
