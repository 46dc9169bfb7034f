"""Guardrails: the compiled Rust scanners, and the one table that turns an outcome into a verdict.

Every kind runs to an `Outcome` (pass, flag, or error); `decide` applies the guardrail's
`enforcing_strategy` to it, so built-in kinds and webhooks block by the same rule:

====================================  ==============  ======  ======  ======
strategy                              (`mode:`)       pass    flag    error
====================================  ==============  ======  ======  ======
enforce                               strict          pass    block   block
enforce_but_ignore_on_error           enforce         pass    block   error (let through)
audit                                 audit           pass    flag    error (let through)
====================================  ==============  ======  ======  ======

The config accepts either spelling; the core maps `mode` to the strategy in the first column.
The table itself lives in the core (`Strategy::decide`), which applies it to the built-in
kinds it runs; `decide` asks it for webhooks and MCP tool checks.
"""

from __future__ import annotations

import enum

from tollway.engine import (
    Check,
    Finding,
    GuardrailInfo,
    Guardrails,
    StreamRedactor,
    guardrail_verdict,
)

__all__ = [
    "Check",
    "Finding",
    "GuardrailInfo",
    "Guardrails",
    "Outcome",
    "Strategy",
    "StreamRedactor",
    "Verdict",
    "decide",
]


class Strategy(enum.StrEnum):
    ENFORCE = "enforce"
    ENFORCE_BUT_IGNORE_ON_ERROR = "enforce_but_ignore_on_error"
    AUDIT = "audit"


class Outcome(enum.StrEnum):
    """What a guardrail run found, before its strategy is applied."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FLAG = "flag"
    ERROR = "error"


class Verdict(enum.StrEnum):
    """What happens to the request; the value is the span's `result` attribute."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FLAG = "flag"
    BLOCK = "block"
    ERROR = "error"

    @property
    def blocks(self) -> bool:
        return self is Verdict.BLOCK


# A verdict by its value (an enum made from its value costs ~0.5 µs).
_VERDICTS = {v.value: v for v in Verdict}


def decide(strategy: Strategy | str, outcome: Outcome) -> Verdict:
    """Applies an `enforcing_strategy` to an outcome (see the module table): the core decides,
    as it does for the built-in kinds it runs; a strategy it does not know is a ValueError."""
    return _VERDICTS[guardrail_verdict(strategy, outcome)]
