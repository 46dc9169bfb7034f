"""Where a client API's answer keeps the texts output guardrails read: chat
`choices[].message.content`, the Responses API's `output[].content[]` `output_text` parts.
(A request's texts are found by the core's binding as `Guardrails.run_input` runs:
`rust/tollway-py/src/texts.rs`.)"""

from __future__ import annotations

from typing import Any

__all__ = ["Place", "answer_texts"]

# Where a text is: its container (an object or a list) and its key there, so mutate can
# write it back.
Place = tuple[Any, str | int]


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
