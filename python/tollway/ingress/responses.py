"""`POST /v1/responses` and `GET /v1/responses/{id}`: OpenAI's Responses API, passed through
to OpenAI, OpenAI-compatible and Azure OpenAI targets.

The body goes upstream as the client sent it (model replaced by the target's); streams are
metered by the Rust meter's `responses` format (usage from the final `response.completed`)
and forwarded as they are. A stored response lives on the account that made it: each worker
remembers the last `DIRECTORY_SIZE` ids it saw with their target, and a `GET` for an id it
does not know (another worker, replica, or an older one) asks each Responses-capable target
the key may use, one account at a time, until one has it. Ids are never rewritten, so they
stay valid against the provider itself.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import msgspec

from tollway.asgi import JSON, RequestHead, Send, send_json
from tollway.engine import Denial, Runtime, Upstream
from tollway.errors import GatewayError, error_body
from tollway.ingress.messages import decode_with_model

if TYPE_CHECKING:
    from tollway.engine import PlanInfo
    from tollway.guardrails.request import GuardPlan
    from tollway.ingress import Answer

__all__ = [
    "DIRECTORY_SIZE",
    "ResponseDirectory",
    "ResponsesIngress",
    "responses_url",
    "retrieve",
    "validate_responses",
]

DIRECTORY_SIZE: Final = 10_000
_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")


def responses_url(up: Upstream) -> str | None:
    """The target's Responses endpoint; `None` for providers without one."""
    name = up.provider.name
    if name in ("openai", "openai-compatible"):
        return up.chat_url.removesuffix("/chat/completions") + "/responses"
    if name == "azure-openai":
        # Azure's v1 API: one URL per resource, the deployment named as `model`.
        return up.chat_url.split("/openai/deployments/", 1)[0] + "/openai/v1/responses"
    return None


def validate_responses(body: bytes) -> dict[str, Any]:
    req = decode_with_model(body)
    if req.get("input") is None and req.get("previous_response_id") is None:
        raise GatewayError.bad_request("'input' is required", "input")
    stream = req.get("stream")
    if stream is not None and type(stream) is not bool:
        raise GatewayError.bad_request("'stream' must be true or false", "stream")
    return req


class _InputDetails(msgspec.Struct):
    cached_tokens: int = 0


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    input_tokens_details: _InputDetails | None = None


class _Incomplete(msgspec.Struct):
    reason: str | None = None


class _Response(msgspec.Struct):
    id: str = ""
    model: str = ""
    status: str | None = None
    usage: _Usage | None = None
    incomplete_details: _Incomplete | None = None


_decode_response = msgspec.json.Decoder(_Response).decode


def _reason(r: _Response) -> list[str]:
    if r.status == "completed":
        return ["stop"]
    if r.status == "incomplete":
        why = r.incomplete_details.reason if r.incomplete_details else None
        return ["length" if why == "max_output_tokens" else why or "incomplete"]
    return [r.status] if r.status else []


class ResponsesIngress:
    """One `/v1/responses` request (the body itself travels as the chat path's request)."""

    __slots__ = ()

    def url(self, up: Upstream) -> str | None:
        return responses_url(up)

    def payload(self, plan: PlanInfo, guard: GuardPlan | None) -> bytes | None:
        return None  # OpenAI and Azure providers send the body with the target's model

    def stream_format(self, up: Upstream) -> str:
        return "responses"

    def answer_of(self, payload: bytes) -> Answer:
        try:
            r = _decode_response(payload)
        except msgspec.DecodeError:
            return (0, 0, 0, 0), "", "", []
        u = r.usage
        if u is None:
            return (0, 0, 0, 0), r.id, r.model, _reason(r)
        cached = u.input_tokens_details.cached_tokens if u.input_tokens_details else 0
        return (u.input_tokens, cached, u.output_tokens, 0), r.id, r.model, _reason(r)

    def answer(self, payload: bytes, upstream: bytes | None, up: Upstream) -> bytes:
        return payload


class ResponseDirectory:
    """Which target made a response, for the last `size` ids this worker saw (LRU)."""

    __slots__ = ("ids", "size")

    def __init__(self, size: int = DIRECTORY_SIZE) -> None:
        self.ids: OrderedDict[str, str] = OrderedDict()
        self.size = size

    def remember(self, response_id: str, target: str) -> None:
        self.ids[response_id] = target
        self.ids.move_to_end(response_id)
        if len(self.ids) > self.size:
            self.ids.popitem(last=False)

    def get(self, response_id: str) -> str | None:
        return self.ids.get(response_id)


async def retrieve(
    rt: Runtime,
    directory: ResponseDirectory,
    session: aiohttp.ClientSession,
    head: RequestHead,
    path: str,
    query: bytes,
    send: Send,
) -> None:
    """`GET /v1/responses/{id}` from the account that made it (see the module docstring)."""
    key = rt.engine.authenticate(head.authorization)
    if isinstance(key, Denial):
        raise GatewayError(key.status, key.message, key.error_type, key.code)
    response_id = path.removeprefix("/v1/responses/")
    if not _ID.fullmatch(response_id):
        raise GatewayError.bad_request("The response id is not valid", "response_id")
    allowed = set(rt.engine.models_for(key))
    targets = [u for u in rt.upstreams if u.name in allowed and responses_url(u) is not None]
    known = directory.get(response_id)
    # The remembered target first; then one target per account.
    order = sorted(targets, key=lambda u: u.name != known)
    seen: set[str] = set()
    status, body = 404, b""
    for up in order:
        if up.account in seen:
            continue
        seen.add(up.account)
        url = f"{responses_url(up)}/{response_id}"
        if query:
            url += "?" + query.decode("latin-1")
        try:
            timeout = aiohttp.ClientTimeout(total=rt.settings.request_timeout_ms / 1000)
            async with session.get(url, headers=up.headers, timeout=timeout) as resp:
                status, body = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            status, body = 502, b""
            continue
        if status < 300:
            directory.remember(response_id, up.name)
            headers = [JSON, (b"x-request-id", head.request_id)]
            headers.append((b"x-tfy-resolved-model", up.resolved_header))
            await send_json(send, status, body, headers)
            return
        if status != 404:
            break
    if status == 404 or not targets:
        raise GatewayError(
            404,
            f"No response with id '{response_id}' was found",
            "invalid_request_error",
            "not_found",
        )
    if status in (401, 403) or not body.startswith(b"{"):
        # The provider refused the gateway's credentials, or answered something else.
        message = f"The provider answered HTTP {status} for response '{response_id}'"
        status, body = 502, error_body(message, "api_error", "upstream_error", None)
    await send_json(send, status, body, [JSON, (b"x-request-id", head.request_id)])
