"""Where each client API keeps the texts guardrails read: chat `messages`; the Responses API's
`instructions` and `input` (a string, or items with `input_text` parts or tool outputs) and
its answer's `output[].content[]` `output_text` parts; embeddings `input` strings."""

from __future__ import annotations

from typing import Any

__all__ = ["Place", "answer_texts", "request_texts"]

# Where a text is: its container (an object or a list) and its key there, so mutate can
# write it back.
Place = tuple[Any, str | int]


def _texts(messages: Any) -> list[Place]:
    """Every text in chat messages or Responses input items (tool outputs included), and the
    strings of a list input (embeddings). Exact type checks: these are decoded JSON."""
    out: list[Place] = []
    if type(messages) is not list:
        return out
    for i, m in enumerate(messages):
        if type(m) is not dict:
            if type(m) is str:
                out.append((messages, i))
            continue
        content = m.get("content")
        if type(content) is str:
            out.append((m, "content"))
        elif type(content) is list:
            for part in content:
                if type(part) is dict and type(part.get("text")) is str:
                    out.append((part, "text"))
        elif m.get("type") == "function_call_output" and type(m.get("output")) is str:
            out.append((m, "output"))
    return out


def request_texts(req: dict[str, Any]) -> list[Place]:
    out = _texts(req.get("messages"))
    if type(req.get("instructions")) is str:
        out.append((req, "instructions"))
    inputs = req.get("input")
    if type(inputs) is str:
        out.append((req, "input"))
    elif inputs is not None:
        out.extend(_texts(inputs))
    return out


def answer_texts(answer: Any) -> list[Place]:
    """Every text of an answer: chat `choices[].message.content`, Responses `output_text`
    parts of `output[]` message items."""
    out: list[Place] = []
    if not isinstance(answer, dict):
        return out
    choices = answer.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            out.append((message, "content"))
    items = answer.get("output")
    for item in items if isinstance(items, list) else ():
        parts = item.get("content") if isinstance(item, dict) else None
        for part in parts if isinstance(parts, list) else ():
            text = part.get("text") if isinstance(part, dict) else None
            if isinstance(text, str) and part.get("type") == "output_text":
                out.append((part, "text"))
    return out
