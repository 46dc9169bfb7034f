"""OpenAI-shaped error bodies: every refusal the gateway sends goes through here.

Messages are written by the gateway, never copied from exceptions, so no URL, key or
stack trace can reach a client.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

__all__ = ["GatewayError", "error_body"]

_encode = msgspec.json.Encoder().encode


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

    def body(self) -> bytes:
        return error_body(self.message, self.error_type, self.code, self.param)

    @classmethod
    def bad_request(cls, message: str, param: str | None = None) -> GatewayError:
        return cls(400, message, "invalid_request_error", "invalid_request", param)

    @classmethod
    def upstream(cls, status: int, message: str, code: str) -> GatewayError:
        return cls(status, message, "api_error", code)
