"""Every refusal the gateway sends, in one table: a named constructor per kind, each knowing
its HTTP status, its OpenAI `type` and `code`.

Messages are written by the gateway, never copied from exceptions, so no URL, key or
stack trace can reach a client. Call sites name the refusal (`GatewayError.not_found()`,
`GatewayError.upstream_failure("timeout", target)`), never spell a status.

=====================  ======  =====================  ==============================
constructor            status  type                   code
=====================  ======  =====================  ==============================
bad_request            400     invalid_request_error  invalid_request
guardrail_blocked      400     invalid_request_error  guardrail_blocked
from_denial            (the engine's: 400/401/403/404/429, with its headers)
not_found              404     invalid_request_error  not_found
method_not_allowed     405     invalid_request_error  method_not_allowed
too_large              413     invalid_request_error  request_too_large
disconnected           499     invalid_request_error  disconnected
internal               500     api_error              internal_error
upstream_failure       502/504 api_error              upstream_connection_error / _timeout
stream_broken          502     api_error              (the meter's code)
no_target              503     api_error              no_target
not_ready              503     api_error              not_ready
=====================  ======  =====================  ==============================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from tollway.engine import Denial

__all__ = ["GatewayError", "error_body"]

_encode = msgspec.json.Encoder().encode

# How the upstream client's failure kinds reach the client: (status, what happened, code).
_UPSTREAM = {
    "connect": (502, "could not connect to the provider", "upstream_connection_error"),
    "timeout": (504, "the provider did not answer in time", "upstream_timeout"),
    "broken": (502, "the connection to the provider broke", "upstream_connection_error"),
}


def error_body(message: str, error_type: str, code: str | None, param: str | None) -> bytes:
    """The JSON body OpenAI clients parse into their exception types."""
    return _encode(
        {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    )


@dataclass(frozen=True, slots=True)
class GatewayError(Exception):
    """A request the gateway refuses or cannot complete, with its HTTP status."""

    status: int
    message: str
    error_type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    # Extra response headers, e.g. retry-after and x-ratelimit-* on a 429.
    headers: tuple[tuple[bytes, bytes], ...] = ()
    # The guardrail that blocked the request or the answer, when one did.
    guardrail: str | None = None

    def body(self) -> bytes:
        return error_body(self.message, self.error_type, self.code, self.param)

    @classmethod
    def bad_request(cls, message: str, param: str | None = None) -> GatewayError:
        return cls(400, message, "invalid_request_error", "invalid_request", param)

    @classmethod
    def from_denial(cls, d: Denial) -> GatewayError:
        """The engine's refusal (401, 403, 404, 400 metadata, 429 with its headers)."""
        headers = tuple((k.encode(), v.encode()) for k, v in d.headers)
        return cls(d.status, d.message, d.error_type, d.code, d.param, headers)

    @classmethod
    def guardrail_blocked(cls, name: str, categories: Sequence[str] = ()) -> GatewayError:
        """Names the guardrail and the categories found, never the text."""
        found = f" ({', '.join(sorted(set(categories)))})" if categories else ""
        return cls(
            400,
            f"Blocked by guardrail '{name}'{found}",
            "invalid_request_error",
            "guardrail_blocked",
            guardrail=name,
        )

    @classmethod
    def not_found(cls) -> GatewayError:
        return cls(404, "Unknown path", "invalid_request_error", "not_found")

    @classmethod
    def method_not_allowed(cls) -> GatewayError:
        return cls(405, "Method not allowed", "invalid_request_error", "method_not_allowed")

    @classmethod
    def too_large(cls, limit: int) -> GatewayError:
        return cls(
            413,
            f"The request body is larger than the gateway's limit of {limit} bytes",
            "invalid_request_error",
            "request_too_large",
        )

    @classmethod
    def disconnected(cls) -> GatewayError:
        """The client went away (nginx's 499); nothing is sent back."""
        return cls(499, "client disconnected", "invalid_request_error", "disconnected")

    @classmethod
    def internal(cls) -> GatewayError:
        return cls(500, "Internal gateway error", "api_error", "internal_error")

    @classmethod
    def upstream(cls, status: int, message: str, code: str) -> GatewayError:
        return cls(status, message, "api_error", code)

    @classmethod
    def upstream_failure(cls, kind: str, target: str, suffix: str = "") -> GatewayError:
        """A transport failure (`connect`, `timeout`, `broken`) calling `target`."""
        status, what, code = _UPSTREAM[kind]
        return cls.upstream(status, f"'{target}': {what}{suffix}", code)

    @classmethod
    def stream_broken(cls, target: str, what: str, code: str) -> GatewayError:
        """The provider's stream failed after it started (sent in-band as an error event)."""
        return cls.upstream(502, f"'{target}': the stream failed: {what[:200]}", code)

    @classmethod
    def no_target(cls) -> GatewayError:
        return cls.upstream(503, "no target could be tried", "no_target")

    @classmethod
    def not_ready(cls) -> GatewayError:
        return cls.upstream(503, "The gateway is starting", "not_ready")
