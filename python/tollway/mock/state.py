"""Per-app state of the mock (answers, counters, recorded requests) and fault selection."""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import msgspec

from tollway.mock.content import Answers, Embedder
from tollway.mock.exchange import Call, RequestRecord
from tollway.mock.settings import MockSettings

__all__ = ["Fault", "MockState", "begin"]

RECORDED_REQUESTS: Final = 100


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do instead of (or before) a normal answer."""

    # none | status | reset-before | reset-mid | truncated | hang | no-usage, and the lies
    # of `mock.lies`: html | oversize | leak (with a status)
    kind: str = "none"
    status: int = 0
    delay_s: float = 0.0


_NONE = Fault()
_SIMPLE = {
    "mock-reset-before": Fault("reset-before"),
    "mock-reset-mid": Fault("reset-mid"),
    "mock-truncated": Fault("truncated"),
    "mock-hang": Fault("hang"),
    "mock-html": Fault("html"),
    "mock-oversize": Fault("oversize"),
    "mock-no-usage": Fault("no-usage"),
}


def model_fault(model: str) -> Fault:
    """The fault a request's model name asks for; normal models (the fast path) get none."""
    if not model.startswith("mock-"):
        return _NONE
    simple = _SIMPLE.get(model)
    if simple is not None:
        return simple
    try:
        if model.startswith("mock-status-"):
            status = int(model[len("mock-status-") :])
            return Fault("status", status) if 400 <= status <= 599 else _NONE
        if model.startswith("mock-leak-"):
            status = int(model[len("mock-leak-") :])
            return Fault("leak", status) if 200 <= status <= 599 else _NONE
        if model.startswith("mock-slow-"):
            return Fault(delay_s=max(float(model[len("mock-slow-") :]), 0.0) / 1000)
    except ValueError:
        pass
    return _NONE


class MockState:
    """Everything one app instance keeps between requests; nothing of it is shared."""

    def __init__(self, settings: MockSettings) -> None:
        self.settings = settings
        self.answers = Answers(settings.tokens)
        self.embedder = Embedder()
        self.latency_s = settings.latency_ms / 1000
        self.itl_s = settings.itl_ms / 1000
        self.requests: deque[RequestRecord] = deque(maxlen=RECORDED_REQUESTS)
        self.models_body = msgspec.json.encode(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1700000000, "owned_by": "tollway-mock"}
                    for m in settings.models
                ],
            }
        )
        self._api_calls = 0
        # Responses API answers by id, for GET /v1/responses/{id} (bounded by the handler).
        self.responses: dict[str, bytes] = {}
        # Ids only need to be unique per worker and look like the real ones.
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}{int(time.time()):x}"

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{self._id_prefix}{next(self._ids):08x}"

    def fault_for(self, model: str) -> Fault:
        """The CLI `--fail-*` decision for this API call, else the model's own fault."""
        s = self.settings
        if s.fail_status is not None:
            n = self._api_calls
            self._api_calls = n + 1
            if s.fail_first is None or n < s.fail_first:
                # Evenly spread and deterministic: call n fails when floor(n*rate) steps up.
                rate = s.fail_rate
                if int((n + 1) * rate) > int(n * rate):
                    return Fault("status", s.fail_status)
        return model_fault(model)


async def begin(
    state: MockState,
    call: Call,
    model: str,
    send_status: Callable[[Call, int], Awaitable[None]],
) -> Fault | None:
    """Waits out the latency, then applies the faults that replace the answer.

    Returns the fault the handler still has to act on (none, reset-mid, truncated, no-usage or
    one of `mock.lies`), or None
    when the request is already dealt with (answered, reset, or the client left).
    """
    fault = state.fault_for(model)
    if not await call.sleep(state.latency_s + fault.delay_s):
        return None
    if fault.kind == "status":
        await send_status(call, fault.status)
    elif fault.kind == "reset-before":
        call.reset()
    elif fault.kind == "hang":
        await call.hang()
    else:
        return fault
    return None
