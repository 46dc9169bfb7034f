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
"""

from __future__ import annotations

import enum

from tollway.engine import Check, Finding, GuardrailInfo, Guardrails, StreamRedactor

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


def _verdict(strategy: Strategy, outcome: Outcome) -> Verdict:
    if outcome is Outcome.PASS:
        return Verdict.PASS
    if strategy is Strategy.AUDIT:
        return Verdict.FLAG if outcome is Outcome.FLAG else Verdict.ERROR
    if outcome is Outcome.FLAG or strategy is Strategy.ENFORCE:
        return Verdict.BLOCK
    return Verdict.ERROR


# The module table, looked up per guardrail run (an enum made from its value costs ~0.5 µs).
_TABLE = {(s.value, o): _verdict(s, o) for s in Strategy for o in Outcome}


def decide(strategy: Strategy | str, outcome: Outcome) -> Verdict:
    """Applies an `enforcing_strategy` to an outcome (see the module table)."""
    verdict = _TABLE.get((strategy, outcome))
    if verdict is None:
        raise ValueError(f"{strategy!r} is not an enforcing strategy")
    return verdict
