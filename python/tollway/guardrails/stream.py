"""Output guardrails over a streamed answer, run by the core in the stream meter's own pass
(tollway-core `sse::guard`): the events the meter frames (or writes, when it translates) are
validated and redacted there, one Rust call per chunk, before the client gets them.

Chat streams carry text in `choices[].delta.content`; Anthropic Messages streams (clients of
`/v1/messages`) in `content_block_delta` text deltas; Responses API streams in
`response.output_text.delta` events, and again whole in the `...done` and final events, which
are redacted whole. Held-back text goes out as one more delta before its block or choice ends.
Validation scans each delta with a bounded tail of the text before it, never the whole answer
again; a validate verdict ends the stream (the relay sends the in-band error event).
"""

from __future__ import annotations

from tollway.engine import SseMeter
from tollway.errors import GatewayError
from tollway.guardrails.request import GuardPlan, blocked

__all__ = ["StreamGuard"]


class StreamGuard:
    """A stream's output guardrails: attached to its meter, which runs them; this reads the
    verdict and reports the runs."""

    __slots__ = ("_error", "_plan", "meter")

    def __init__(self, plan: GuardPlan, meter: SseMeter) -> None:
        """`meter`: the stream's, which from now on returns guarded events."""
        self._plan = plan
        self.meter = meter
        meter.guard_output(plan.set, plan.output_mutate, plan.output_validate)
        self._error: GatewayError | None = None

    @property
    def error(self) -> GatewayError | None:
        """The refusal when a validator blocked the rest of the answer."""
        if self._error is None and (found := self.meter.blocked) is not None:
            gid, categories = found
            self._error = blocked(self._plan.infos[gid], categories)
        return self._error

    def report(self, start_ns: int) -> None:
        """One run per output guardrail for the whole stream."""
        plan = self._plan
        error = self.error
        for gid in plan.output_validate:
            stopped = error is not None and error.guardrail == plan.infos[gid].name
            plan.ran(gid, "output", "block" if stopped else "pass", start_ns)
        cats = self.meter.redacted
        for gid in plan.output_mutate:
            plan.ran(gid, "output", "mutate" if cats else "pass", start_ns, cats)
