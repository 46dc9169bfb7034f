"""Guardrails on the request path: which run, where, and what a verdict does.

Input mutate runs before the model call, in the order listed (built-in redaction, webhook
`transformed`); built-in input validators run before the call too (a scan is microseconds, a
task to run it beside the call cost more than the scan), and webhook validators beside the
call (a task), cancelling it on a block; the response waits for their verdict before the
first byte goes out. Output guardrails see the whole answer (non-stream) or redact deltas as
they stream, holding back only what a pattern could still need. A block is a 400 naming the
guardrail and the categories found, never the text.

Consecutive built-ins of a phase are one core call (`Guardrails.run_input`, `run_output`):
the core finds the request's texts and writes redactions back into it, scans, applies each
strategy and times the runs; Python records the runs and raises the block. An answer's texts
are found by `texts.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import lru_cache
from itertools import starmap
from typing import Any, Literal

import aiohttp
import msgspec

from tollway.engine import Admission
from tollway.errors import GatewayError
from tollway.guardrails import GuardrailInfo, Guardrails
from tollway.guardrails.texts import answer_texts
from tollway.guardrails.webhook import call_webhook
from tollway.telemetry import GuardrailRun, now_ns

log = logging.getLogger("tollway.guardrails")

__all__ = [
    "GuardPlan",
    "blocked",
    "guard_input",
    "guard_input_hooked",
    "plan_for",
    "validate_hooks",
]

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


# One step of an input phase with webhook mutators: a webhook's id, or consecutive built-ins
# run by one core call (the built-in validators end the last one).
Step = int | tuple[int, ...]

# The ids of one guardrail selection, by phase and operation (see `GuardPlan`).
Split = tuple[
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...],
    tuple[Step, ...],
    tuple[int, ...],
]


class GuardPlan(msgspec.Struct):
    """The guardrails one request runs, split by phase and operation (a Struct: made once per
    guarded request, its `__init__` runs in C)."""

    set: Guardrails
    infos: tuple[GuardrailInfo, ...]
    # The input mutators (built-in and webhook), in the order listed.
    input_mutate: tuple[int, ...] = ()
    output_mutate: tuple[int, ...] = ()
    output_validate: tuple[int, ...] = ()
    # Output webhooks: the OpenAI-shaped answer is POSTed whole (non-streamed answers).
    output_hooks: tuple[int, ...] = ()
    # The built-in input guardrails, mutators then validators, as one core call; or, when
    # webhook mutators are among them, () and the phase in order as `input_steps`.
    input_builtin: tuple[int, ...] = ()
    input_steps: tuple[Step, ...] = ()
    # Input webhook validators: called together, beside the model call.
    input_hooks: tuple[int, ...] = ()
    # Every run, for spans and llm_gateway_guardrails_* metrics (shared with the request's log).
    runs: list[GuardrailRun] = msgspec.field(default_factory=list)

    def ran(
        self, gid: int, phase: str, result: str, start_ns: int, categories: Sequence[str] = ()
    ) -> None:
        """A run the core did not time: a webhook's, or a stream's output guardrail (a
        built-in's `flag` is logged where the core's runs arrive, `_log_flags`)."""
        self.runs.append(
            GuardrailRun(
                name=self.infos[gid].name,
                phase=phase,
                result=result,
                start_ns=start_ns,
                end_ns=now_ns(),
                categories=sorted(set(categories)) if categories else [],
            )
        )

    @property
    def output(self) -> bool:
        """Built-in output guardrails run (webhooks are `output_hooks`)."""
        return bool(self.output_mutate or self.output_validate)


@lru_cache(maxsize=256)
def _split(
    infos: tuple[GuardrailInfo, ...], inputs: tuple[int, ...], outputs: tuple[int, ...]
) -> Split:
    """A selection's ids by phase and operation: the same for every request that makes it."""
    parts: tuple[list[int], ...] = ([], [], [], [], [])
    input_mutate, input_validate, output_mutate, output_validate, output_hooks = parts
    for ids, mutate, validate in (
        (inputs, input_mutate, input_validate),
        (outputs, output_mutate, output_validate),
    ):
        for i in ids:
            if ids is outputs and infos[i].kind == "webhook":
                output_hooks.append(i)  # they see the whole answer, after the built-ins
                continue
            (mutate if infos[i].operation == "mutate" else validate).append(i)
    steps: list[Step] = []
    batch: list[int] = []
    for i in input_mutate:
        if infos[i].kind == "webhook":
            steps.extend((tuple(batch), i) if batch else (i,))
            batch = []
        else:
            batch.append(i)
    batch.extend(i for i in input_validate if infos[i].kind != "webhook")
    builtin: tuple[int, ...] = ()
    if not steps:
        builtin = tuple(batch)
    elif batch:
        steps.append(tuple(batch))
    hooks = tuple(i for i in input_validate if infos[i].kind == "webhook")
    im, _, om, ov, oh = (tuple(p) for p in parts)
    return im, om, ov, oh, builtin, tuple(steps), hooks


def plan_for(
    guardrails: Guardrails,
    infos: tuple[GuardrailInfo, ...],
    adm: Admission,
    runs: list[GuardrailRun],
) -> GuardPlan | None:
    """The request's guardrails, as `admit` chose them (rule and `X-TFY-GUARDRAILS`), by phase."""
    inputs, outputs = adm.input_guardrails, adm.output_guardrails
    if not inputs and not outputs:
        return None
    return GuardPlan(guardrails, infos, *_split(infos, tuple(inputs), tuple(outputs)), runs=runs)


def blocked(info: GuardrailInfo, categories: list[str]) -> GatewayError:
    return GatewayError.guardrail_blocked(info.name, categories)


def guard_input(
    plan: GuardPlan, req: dict[str, Any], adm: Admission
) -> tuple[bool, GatewayError | None]:
    """The input phase without webhook mutators: the built-ins in one core call (see
    `_builtins`). Webhook validators are `plan.input_hooks`, for `validate_hooks`."""
    ids = plan.input_builtin
    return _builtins(plan, req, adm, ids) if ids else (False, None)


async def guard_input_hooked(
    plan: GuardPlan, req: dict[str, Any], adm: Admission, session: aiohttp.ClientSession | None
) -> tuple[bool, GatewayError | None]:
    """The input phase in its listed order, webhook mutators among the built-ins: whether
    the request changed, and a built-in's block (a webhook's block is raised)."""
    changed = False
    for step in plan.input_steps:
        if isinstance(step, tuple):
            mutated, verdict = _builtins(plan, req, adm, step)
            changed = changed or mutated
            if verdict is not None:
                return changed, verdict
            continue
        info = plan.infos[step]
        t0 = now_ns()
        result, errored = await _webhook(info, req, "input", session)
        if isinstance(result, GatewayError):
            plan.ran(step, "input", "error" if errored else "block", t0)
            raise result
        if isinstance(result, dict):
            req.clear()
            req.update(result)
            changed = True
        plan.ran(step, "input", "error" if errored else "mutate" if result else "pass", t0)
    return changed, None


def _builtins(
    plan: GuardPlan, req: dict[str, Any], adm: Admission, ids: tuple[int, ...]
) -> tuple[bool, GatewayError | None]:
    """Consecutive built-in input guardrails in one core call: the core finds the request's
    texts (the client APIs' places for them), mutators redact them in place, validators (a
    scan each, microseconds: no task) check them joined, and metadata-validation reads
    `admit`'s verdict. Whether a text changed, and the block."""
    changed, runs, flags, block = plan.set.run_input(ids, req, adm)
    plan.runs.extend(starmap(GuardrailRun, runs))
    if flags:
        _log_flags(flags)
    if block is None:
        return changed, None
    return changed, blocked(plan.infos[block[0]], block[1])


def _log_flags(flags: list[tuple[str, str, str]]) -> None:
    for name, phase, categories in flags:
        # Audit findings are logged by category only, never the text.
        log.info("guardrail %r flagged %s (%s)", name, phase, categories)


async def validate_hooks(
    plan: GuardPlan,
    req: dict[str, Any],
    webhooks: Sequence[int],
    session: aiohttp.ClientSession | None,
) -> GatewayError | None:
    """The webhook input validators, together: the first blocking verdict, or None."""
    t0 = now_ns()
    results = await asyncio.gather(
        *(_webhook(plan.infos[g], req, "input", session) for g in webhooks)
    )
    for gid, (result, errored) in zip(webhooks, results, strict=True):
        blocks = isinstance(result, GatewayError)
        plan.ran(gid, "input", "error" if errored else "block" if blocks else "pass", t0)
    for result, _ in results:
        if isinstance(result, GatewayError):
            return result
    return None


async def _webhook(
    info: GuardrailInfo,
    payload: dict[str, Any],
    phase: Literal["input", "output"],
    session: aiohttp.ClientSession | None,
) -> tuple[GatewayError | dict[str, Any] | None, bool]:
    """(a block, the transformed body, or None for a pass or an error the strategy lets
    through; whether the webhook itself failed - counted as `error`, never as a pass)."""
    if session is None or info.url is None:
        return None, False
    result = await call_webhook(
        session,
        name=info.name,
        url=info.url,
        timeout_ms=info.timeout_ms or 1000,
        strategy=info.enforcing_strategy,
        payload=payload,
        phase=phase,
        headers=info.headers,
    )
    errored = result.error is not None
    if result.verdict.blocks:
        return blocked(info, []), errored
    transformed = result.transformed
    return (transformed if isinstance(transformed, dict) else None), errored


def guard_output(
    plan: GuardPlan, payload: bytes, contents: list[str | None] | None = None
) -> bytes | GatewayError:
    """A non-streamed answer after output guardrails: redacted, blocked, or as it was.
    `contents`: each choice's message text as the chat answer's one decode read it (None:
    not text); the payload is then decoded again only when a redaction changes a text.
    Without it (a client API's own answer: Responses, Messages) the payload's texts are
    found here (`answer_texts`)."""
    if contents is not None:
        changed, verdict = _check_output(plan, contents)
        if verdict is not None:
            return verdict
        if not changed:
            return payload
        answer = _decode(payload)
        for i, text in changed:
            answer["choices"][i]["message"]["content"] = text
        return _encode(answer)
    try:
        answer = _decode(payload)
    except msgspec.DecodeError:
        return payload
    places = answer_texts(answer)
    changed, verdict = _check_output(plan, [c[k] for c, k in places])
    if verdict is not None:
        return verdict
    for i, text in changed:
        container, key = places[i]
        container[key] = text
    return _encode(answer) if changed else payload


def _check_output(
    plan: GuardPlan, texts: list[str | None]
) -> tuple[list[tuple[int, str]], GatewayError | None]:
    """An answer's texts through the output guardrails in one core call, text by text
    (validators, then mutators): the redacted texts by index, or the refusal."""
    changed, runs, flags, block = plan.set.run_output(
        plan.output_validate, plan.output_mutate, texts
    )
    plan.runs.extend(starmap(GuardrailRun, runs))
    if flags:
        _log_flags(flags)
    if block is None:
        return changed, None
    return changed, blocked(plan.infos[block[0]], block[1])


async def webhook_output(
    plan: GuardPlan, payload: bytes, session: aiohttp.ClientSession | None
) -> bytes | GatewayError:
    """Output webhooks on a whole answer, in order: block, replace (mutate) or pass."""
    try:
        answer = _decode(payload)
    except msgspec.DecodeError:
        return payload
    changed = False
    for gid in plan.output_hooks:
        info = plan.infos[gid]
        t0 = now_ns()
        result, errored = await _webhook(info, answer, "output", session)
        if isinstance(result, GatewayError):
            plan.ran(gid, "output", "error" if errored else "block", t0)
            return result
        mutated = isinstance(result, dict) and info.operation == "mutate"
        if mutated:
            answer, changed = result, True
        plan.ran(gid, "output", "error" if errored else "mutate" if mutated else "pass", t0)
    return _encode(answer) if changed else payload
