"""Output guardrails over a streamed answer: deltas redacted as they pass, holding back only
what a pattern could still need; a validate verdict ends the stream with an error event.

Chat streams carry text in `choices[].delta.content`; Anthropic Messages streams (clients of
`/v1/messages`) in `content_block_delta` text deltas; Responses API streams in
`response.output_text.delta` events, and again whole in the `...done` and final events, which
are redacted whole. Held-back text goes out as one more delta before its block or choice ends.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tollway.errors import GatewayError
from tollway.guardrails import Outcome, StreamRedactor, decide
from tollway.guardrails.request import GuardPlan, answer_texts, blocked

__all__ = ["StreamGuard"]

# How far back a validated delta is scanned with the new text: a pattern match up to this
# long that spans deltas is found (pii, secrets and regex findings are far shorter).
_TAIL = 1024

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class StreamGuard:
    """Output guardrails over an OpenAI chat-completion SSE stream, event by event."""

    __slots__ = ("_buffer", "_done", "_plan", "_redactors", "_seen", "_whole", "error")

    def __init__(self, plan: GuardPlan) -> None:
        self._plan = plan
        self._buffer = b""
        # Per choice (chat: its index), text block (Anthropic: ("block", index)) or output
        # part (Responses: (output index, content index)); [DONE] flushes the chat ones.
        self._redactors: dict[Any, StreamRedactor] = {}
        self._done: list[StreamRedactor] = []
        self._seen: dict[Any, str] = {}  # per choice: the last _TAIL characters validated
        self._whole: dict[Any, str] = {}  # per choice: the answer so far (prompt-injection)
        self.error: GatewayError | None = None

    def feed(self, data: bytes) -> bytes:
        """Complete events in, guarded events out; a partial event waits for its end."""
        self._buffer += data
        *events, self._buffer = self._buffer.split(b"\n\n")
        return b"".join(self._event(e) + b"\n\n" for e in events if self.error is None)

    def report(self, start_ns: int) -> None:
        """One run per output guardrail for the whole stream."""
        plan = self._plan
        for gid in plan.output_validate:
            blocked = self.error is not None and self.error.guardrail == plan.infos[gid].name
            plan.ran(gid, "output", "block" if blocked else "pass", start_ns)
        cats = sorted({c for r in self._done for c in r.categories})
        for gid in plan.output_mutate:
            plan.ran(gid, "output", "mutate" if cats else "pass", start_ns, cats)

    def finish(self) -> bytes:
        """Flushes a stream that ended without [DONE] (the caller reports the error)."""
        return self._flush_all() + (self._buffer if self.error is None else b"")

    def _rest(self, key: Any) -> str:
        """What a choice's redactor still holds."""
        r = self._redactors.pop(key, None)
        if r is None:
            return ""
        self._done.append(r)
        return r.finish()

    def _flush(self, index: int) -> bytes:
        """What a choice's redactor still holds, as one more content chunk."""
        rest = self._rest(index)
        return self._chunk(index, rest) if rest else b""

    def _flush_all(self) -> bytes:
        return b"".join(self._flush(i) for i in list(self._redactors) if isinstance(i, int))

    def _redact(self, key: Any, text: str) -> str:
        r = self._redactors.get(key)
        if r is None:
            r = self._redactors[key] = self._plan.set.stream_redactor(self._plan.output_mutate)
        return r.feed(text)

    def _chunk(self, index: int, text: str) -> bytes:
        event = {
            "object": "chat.completion.chunk",
            "choices": [{"index": index, "delta": {"content": text}}],
        }
        return b"data: " + _encode(event) + b"\n\n"

    def _event(self, event: bytes) -> bytes:
        if event.startswith(b"data: [DONE]"):
            return self._flush_all() + event
        if event.startswith(b"event: response."):
            return self._responses_event(event)
        if event.startswith(b"event: content_block_"):
            return self._anthropic_event(event)
        if not event.startswith(b"data: {"):
            return event
        try:
            chunk = _decode(event[6:])
        except msgspec.DecodeError:
            return event
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        prefix = b""
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                # Held-back text goes out before the choice ends.
                prefix += self._flush(choice.get("index", 0))
            delta = choice.get("delta") if isinstance(choice, dict) else None
            text = delta.get("content") if isinstance(delta, dict) else None
            if not isinstance(text, str) or not text or delta is None:
                continue
            index = choice.get("index", 0)
            if self._plan.output_validate and self._validate(index, text):
                return b""
            if self._plan.output_mutate:
                delta["content"] = self._redact(index, text)
        return prefix + b"data: " + _encode(chunk)

    def _anthropic_event(self, event: bytes) -> bytes:
        """An Anthropic Messages event: a text block's deltas validated and redacted as chat
        deltas are; what the redactor holds goes out before the block stops."""
        name, _, data = event.partition(b"\ndata: ")
        try:
            body = _decode(data)
        except msgspec.DecodeError:
            return event
        kind = body.get("type") if isinstance(body, dict) else None
        key = ("block", body.get("index", 0) if isinstance(body, dict) else 0)
        if kind == "content_block_stop" and self._plan.output_mutate:
            rest = self._rest(key)
            if rest:
                held = {"type": "text_delta", "text": rest}
                more = {"type": "content_block_delta", "index": key[1], "delta": held}
                return b"event: content_block_delta\ndata: " + _encode(more) + b"\n\n" + event
            return event
        delta = body.get("delta") if kind == "content_block_delta" else None
        text = delta.get("text") if isinstance(delta, dict) else None
        if not isinstance(text, str) or delta is None or delta.get("type") != "text_delta":
            return event
        if self._plan.output_validate and self._validate(key, text):
            return b""
        if not self._plan.output_mutate:
            return event
        delta["text"] = self._redact(key, text)
        return name + b"\ndata: " + _encode(body)

    def _responses_event(self, event: bytes) -> bytes:
        """A Responses API event: text deltas validated and redacted as chat deltas are; the
        events that repeat the whole text redacted whole."""
        name, _, data = event.partition(b"\ndata: ")
        try:
            body = _decode(data)
        except msgspec.DecodeError:
            return event
        kind = body.get("type") if isinstance(body, dict) else None
        if kind == "response.output_text.delta" and isinstance(body.get("delta"), str):
            key = (body.get("output_index", 0), body.get("content_index", 0))
            if self._plan.output_validate and self._validate(key, body["delta"]):
                return b""
            if not self._plan.output_mutate:
                return event
            body["delta"] = self._redact(key, body["delta"])
            return name + b"\ndata: " + _encode(body)
        if not self._plan.output_mutate:
            return event
        prefix = b""
        if kind == "response.output_text.done" and isinstance(body.get("text"), str):
            key = (body.get("output_index", 0), body.get("content_index", 0))
            rest = self._rest(key)
            if rest:  # what the redactor held back, before the text is declared done
                delta = {k: body.get(k) for k in ("item_id", "output_index", "content_index")}
                delta |= {"type": "response.output_text.delta", "delta": rest, "logprobs": []}
                delta["sequence_number"] = body.get("sequence_number")
                prefix = b"event: response.output_text.delta\ndata: " + _encode(delta) + b"\n\n"
            body["text"] = self._whole_redacted(body["text"])
        elif kind == "response.content_part.done":
            part = body.get("part")
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part["text"] = self._whole_redacted(part["text"])
        elif kind == "response.output_item.done":
            self._redact_answer({"output": [body.get("item")]})
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self._redact_answer(body.get("response"))
        else:
            return event
        return prefix + name + b"\ndata: " + _encode(body)

    def _whole_redacted(self, text: str) -> str:
        return self._plan.set.redact(self._plan.output_mutate, text)[0]

    def _redact_answer(self, answer: Any) -> None:
        for container, key in answer_texts(answer):
            container[key] = self._whole_redacted(container[key])

    def _validate(self, index: Any, text: str) -> bool:
        """Scans only the new text, with the last `_TAIL` characters before it so a match
        split across deltas is still found; findings that ended earlier were seen before."""
        tail = self._seen.get(index, "")
        window = tail + text
        self._seen[index] = window[-_TAIL:]
        for gid in self._plan.output_validate:
            info = self._plan.infos[gid]
            if info.kind == "webhook":
                continue
            if info.kind == "prompt-injection":
                # A score over the whole answer, not a span: it needs all of it.
                whole = self._whole[index] = self._whole.get(index, "") + text
                check = self._plan.set.check(gid, whole)
                flagged = check is not None and check.flagged
                cats = [f.category for f in check.findings] if check is not None else []
            else:
                check = self._plan.set.check(gid, window)
                found = check.findings if check is not None else []
                cats = [f.category for f in found if f.end > len(tail)]
                flagged = bool(cats)
            if flagged and decide(info.enforcing_strategy, Outcome.FLAG).blocks:
                self.error = blocked(info, cats)
                return True
        return False
