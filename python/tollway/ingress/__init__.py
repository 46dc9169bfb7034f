"""Client APIs besides OpenAI chat: Anthropic's Messages (`/v1/messages`) and OpenAI's
Responses (`/v1/responses`). Each is an `Ingress` the chat request path consults at the few
points where the API differs (URL, upstream body, stream format, answer, usage); admission,
guardrails, limits, attempts and settle are the chat path's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tollway.engine import PlanInfo, Upstream
    from tollway.guardrails.request import GuardPlan

__all__ = ["Answer", "Ingress"]

# (input, cached input, output, cache write), id, model, finish reasons.
Answer = tuple[tuple[int, int, int, int], str, str, list[str]]


class Ingress(Protocol):
    def url(self, up: Upstream) -> str | None:
        """Where this API is on the target; `None` when the target does not have it."""
        ...

    def payload(self, plan: PlanInfo, guard: GuardPlan | None) -> bytes | None:
        """The upstream body when it is not the provider's translation of the chat request."""
        ...

    def stream_format(self, up: Upstream) -> str:
        """The `SseMeter` format for a stream from this target."""
        ...

    def answer_of(self, payload: bytes) -> Answer | None:
        """Usage, id, model and finish reasons of a non-streamed answer; `None` when the
        answer is chat-shaped (the chat path reads it)."""
        ...

    def answer(self, payload: bytes, upstream: bytes | None, up: Upstream) -> bytes:
        """The client's body for a non-streamed answer: `payload` is the chat-shaped answer
        after output guardrails; `upstream` the provider's own body when nothing changed it."""
        ...
