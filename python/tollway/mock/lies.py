"""Faults of a lying or leaky provider, chosen by model name, for the gateway's hostile tests.

- `mock-html`: 200 with an HTML page (a login portal or proxy error page in front of the API).
- `mock-oversize`: 200 with a ~300 KB body sent in chunks, without a declared length.
- `mock-leak-<status>`: that status, with an error body quoting the key the request carried
  (`Authorization` or `x-api-key`), as "Incorrect API key provided: ..." messages do, and the
  request's first message; with 200 the answer is a stream or completion quoting the key.
- `mock-no-usage` (handled by the chat handlers): a normal answer without `usage`.
"""

from __future__ import annotations

import msgspec

from tollway.mock.exchange import JSON_HEADERS, Call

__all__ = ["LIES", "leaked_key", "lie"]

LIES = frozenset({"html", "oversize", "leak"})

_HTML = b"<!doctype html><html><body><h1>502 Bad Gateway</h1></body></html>"
_OVERSIZE_PART = b'{"pad":"' + b"x" * 65_000 + b'"},'
_OVERSIZE_PARTS = 5
_encode = msgspec.json.Encoder().encode


def leaked_key(call: Call) -> str:
    """The credential the request carried, as a careless provider would quote it."""
    for name, value in call.scope["headers"]:
        if name in (b"authorization", b"x-api-key"):
            return str(value.decode("latin-1")).removeprefix("Bearer ")
    return ""


async def lie(call: Call, kind: str, status: int, stream: bool, echo: str = "") -> None:
    """Answers with the lie `kind` names (see the module docstring); `echo` is quoted too."""
    if kind == "html":
        await call.respond(200, _HTML, ((b"content-type", b"text/html"),))
    elif kind == "oversize":
        await _oversize(call)
    elif status != 200:
        message = f"Incorrect API key provided: {leaked_key(call)}. Request: {echo}"
        body = _encode({"error": {"message": message, "type": "invalid_request_error"}})
        await call.respond(status, body, (*JSON_HEADERS, (b"retry-after", b"1")))
    elif stream:
        await _leaky_stream(call)
    else:
        answer = {"role": "assistant", "content": f"your key is {leaked_key(call)}"}
        choice = {"index": 0, "message": answer, "finish_reason": "stop"}
        usage = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
        out = {"id": "chatcmpl-leak", "object": "chat.completion", "model": "mock-leak"}
        await call.respond(200, _encode({**out, "choices": [choice], "usage": usage}))


async def _oversize(call: Call) -> None:
    parts = [b'{"choices":[', *([_OVERSIZE_PART] * _OVERSIZE_PARTS), b"{}]}"]
    await call.respond_chunked(200, parts)


async def _leaky_stream(call: Call) -> None:
    """One content chunk quoting the key, then an error event quoting it again."""
    key = leaked_key(call)
    delta = {"index": 0, "delta": {"role": "assistant", "content": f"key {key}"}}
    chunk = {"id": "chatcmpl-leak", "object": "chat.completion.chunk", "choices": [delta]}
    error = {"error": {"message": f"upstream failure for key {key}", "type": "server_error"}}
    events = [b"data: " + _encode(chunk) + b"\n\n", b"data: " + _encode(error) + b"\n\n"]
    if await call.stream(events, range(0), 0.0):
        await call.end()
