"""`POST /v1/messages` and `/v1/messages/count_tokens`: Anthropic's Messages API in front of
any target.

Anthropic targets get the client's own body (model replaced) and answer as they are: the
stream is metered by the Rust meter in `anthropic-raw` mode and forwarded. Other targets get
the OpenAI chat translation, and their answers come back translated: non-streamed by
`messages.to_message`, streamed by the meter's `openai-to-anthropic` format (in Rust, on the
meter's own parse of each chunk); Gemini and Bedrock streams are first translated to OpenAI
chunks, as for chat clients, then by the same translation (`gemini-to-anthropic`,
`bedrock-to-anthropic`). Errors, wherever they arise, leave as Anthropic error bodies
or stream `error` events (`AnthropicSend`). A gateway key is accepted as `x-api-key` too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from tollway.asgi import (
    JSON,
    Message,
    Receive,
    RequestHead,
    Scope,
    Send,
    read_body,
    send_error,
    send_json,
)
from tollway.engine import Denial, Runtime, count_prompt_tokens
from tollway.errors import GatewayError
from tollway.ingress.messages import to_chat_request, to_error, to_message, validate_messages
from tollway.providers import TranslationError

if TYPE_CHECKING:
    from tollway.engine import PlanInfo, Upstream
    from tollway.guardrails.request import GuardPlan
    from tollway.ingress import Answer

__all__ = ["AnthropicIngress", "AnthropicSend", "adopt_api_key", "count_tokens"]

_encode = msgspec.json.Encoder().encode


def adopt_api_key(head: RequestHead, headers: list[tuple[bytes, bytes]]) -> None:
    """Anthropic clients send the key as `x-api-key`; the gateway reads it as a bearer key."""
    if head.authorization is not None:
        return
    for name, value in headers:
        if name == b"x-api-key":
            head.authorization = b"Bearer " + value
            return


class AnthropicIngress:
    """One `/v1/messages` request: the client's body and its chat translation."""

    __slots__ = ("lossy", "native", "requested")

    def __init__(self, native: dict[str, Any], lossy: list[str]) -> None:
        self.native = native
        self.lossy = lossy
        self.requested: str = native["model"]

    @staticmethod
    def passthrough(up: Upstream) -> bool:
        return up.provider.name == "anthropic"

    def url(self, up: Upstream) -> str | None:
        if self.native.get("stream") and up.stream_url is not None:
            return up.stream_url  # providers with a separate streaming method
        return up.chat_url

    def payload(self, plan: PlanInfo, guard: GuardPlan | None) -> bytes | None:
        up = plan.upstream
        mutated = guard is not None and bool(guard.input_mutate)
        if self.passthrough(up) and not mutated:
            # The client's own body: nothing lost (cache_control, thinking, documents).
            body = {**self.native, **(plan.override_params or {}), "model": up.model_id}
            return _encode(body)
        if self.lossy:
            kinds = ", ".join(sorted(set(self.lossy)))
            raise TranslationError(f"'{up.name}' cannot take content of type {kinds}")
        return None

    def stream_format(self, up: Upstream) -> str:
        if self.passthrough(up):
            return "anthropic-raw"
        # OpenAI chunks (an OpenAI-shaped target's, or Gemini's and Bedrock's translated).
        return f"{up.provider.stream_format}-to-anthropic"

    def answer_of(self, payload: bytes) -> Answer | None:
        return None  # the chat-shaped answer: the chat path reads it

    def answer(self, payload: bytes, upstream: bytes | None, up: Upstream) -> bytes:
        if upstream is not None and self.passthrough(up):
            return upstream
        return to_message(payload, self.requested)


class AnthropicSend:
    """Wraps ASGI `send` so every error the chat path sends is Anthropic-shaped: JSON error
    bodies, and the in-band `event: error` of a stream that broke after its first byte."""

    __slots__ = ("send", "status", "stream")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 200
        self.stream = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.stream = (b"content-type", b"text/event-stream") in message["headers"]
        elif message["type"] == "http.response.body":
            body: bytes = message.get("body", b"")
            if self.status >= 400 and body:
                message = {**message, "body": to_error(self.status, body)}
            elif self.stream and body.startswith(b"event: error\n"):
                data = body.partition(b"data: ")[2].strip()
                event = b"event: error\ndata: " + to_error(502, data) + b"\n\n"
                message = {**message, "body": event}
        await self.send(message)


async def count_tokens(rt: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """`/v1/messages/count_tokens`: the prompt counted locally with the model's tokenizer (an
    estimate for non-OpenAI models); no upstream call and no rate-limit debit."""
    head = RequestHead(scope["headers"])
    adopt_api_key(head, scope["headers"])
    send = AnthropicSend(send)
    try:
        key = rt.engine.authenticate(head.authorization)
        if isinstance(key, Denial):
            raise GatewayError(key.status, key.message, key.error_type, key.code)
        body = await read_body(receive, rt.settings.max_body_bytes, head.content_length)
        req = validate_messages(body, needs_max_tokens=False)
        chat, _ = to_chat_request(req)
        model = req["model"]
        if model not in rt.engine.models_for(key):
            message = f"model '{model}' is not available to this key"
            raise GatewayError(404, message, "invalid_request_error", "model_not_found")
        payload: dict[str, Any] = {"messages": chat["messages"]}
        if chat.get("tools"):
            payload["tools"] = chat["tools"]
        tokens = count_prompt_tokens(_encode(payload), model)
        answer = _encode({"input_tokens": tokens})
        await send_json(send, 200, answer, [JSON, (b"x-request-id", head.request_id)])
    except GatewayError as e:
        await send_error(send, e, head.request_id)
