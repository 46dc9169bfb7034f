"""The agent loop's two ends: a model call's response kept in memory, and the client's
response (one JSON answer, or SSE with tool steps as comments, then the answer)."""

from __future__ import annotations

from typing import Any

import msgspec

from tollway.asgi import JSON, Send

__all__ = ["AgentResponse", "Capture"]

_encode = msgspec.json.Encoder().encode


class Capture:
    """An ASGI `send` that keeps one response (a model call made inside the loop)."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.parts: list[bytes] = []

    async def __call__(self, msg: Any) -> None:
        if msg["type"] == "http.response.start":
            self.status, self.headers = msg["status"], list(msg.get("headers", ()))
        else:
            self.parts.append(msg.get("body", b""))


class AgentResponse:
    """The client's side: one JSON answer, or SSE started at the first tool step."""

    def __init__(self, send: Send, stream: bool) -> None:
        self.send, self.stream, self.started = send, stream, False

    async def _start(self) -> None:
        if not self.started:
            self.started = True
            headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
            await self.send({"type": "http.response.start", "status": 200, "headers": headers})

    async def _event(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def comment(self, text: str) -> None:
        if self.stream:
            await self._start()
            await self._event(f": {text}\n\n".encode())

    async def fail_or_relay(self, capture: Capture) -> None:
        body = b"".join(capture.parts)
        if not self.started:
            await self.send(
                {
                    "type": "http.response.start",
                    "status": capture.status,
                    "headers": capture.headers,
                }
            )
            await self.send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await self._event(b"data: " + body + b"\n\n")
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def finish(
        self, answer: dict[str, Any], wants_usage: bool, iterations: int, timing: str
    ) -> None:
        extra = (b"x-tfy-agent-iterations", str(iterations).encode())
        timing_header = (b"server-timing", timing.encode())
        if not self.stream:
            await self.send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [JSON, extra, timing_header],
                }
            )
            await self.send({"type": "http.response.body", "body": _encode(answer)})
            return
        await self._start()
        choice = answer["choices"][0]
        message = choice["message"]
        head = {
            "id": answer.get("id", ""),
            "object": "chat.completion.chunk",
            "created": answer.get("created", 0),
            "model": answer.get("model", ""),
        }
        delta = {"role": "assistant", "content": message.get("content")}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
        chunks = [
            {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
            {
                **head,
                "choices": [
                    {"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason")}
                ],
            },
        ]
        if wants_usage:
            chunks.append({**head, "choices": [], "usage": answer.get("usage")})
        for c in chunks:
            await self._event(b"data: " + _encode(c) + b"\n\n")
        await self.send(
            {"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False}
        )
