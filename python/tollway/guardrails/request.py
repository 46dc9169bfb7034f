"""Guardrails on the request path: which run, where, and what a verdict does.

Input mutate runs before the model call, in the order listed (built-in redaction, webhook
`transformed`); built-in input validators run before the call too (a scan is microseconds, a
task to run it beside the call cost more than the scan), and webhook validators beside the
call (a task), cancelling it on a block; the response waits for their verdict before the
first byte goes out. Output guardrails see the
whole answer (non-stream) or redact deltas as they stream, holding back only what a
pattern could still need. A block is a 400 naming the guardrail and the categories found,
never the text.

Texts are read where each client API keeps them: chat `messages`; the Responses API's
`instructions` and `input` (a string, or items with `input_text` parts or tool outputs) and
its answer's `output[].content[]` `output_text` parts; embeddings `input` strings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import aiohttp
import msgspec

from tollway.engine import Admission
from tollway.errors import GatewayError
from tollway.guardrails import GuardrailInfo, Guardrails, Outcome, decide
from tollway.guardrails.webhook import call_webhook
from tollway.telemetry import GuardrailRun, now_ns

log = logging.getLogger("tollway.guardrails")

__all__ = [
    "GuardPlan",
    "answer_texts",
    "blocked",
    "mutate_input",
    "plan_for",
    "validate_builtin",
    "validate_hooks",
]

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


# Where a text is: its container (an object or a list) and its key there, so mutate can
# write it back.
Place = tuple[Any, str | int]


# The ids of one guardrail selection, by phase and operation (see `GuardPlan`).
Split = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]


@dataclass(slots=True)
class GuardPlan:
    """The guardrails one request runs, split by phase and operation."""

    set: Guardrails
    infos: tuple[GuardrailInfo, ...]
    input_mutate: tuple[int, ...] = ()
    input_validate: tuple[int, ...] = ()
    output_mutate: tuple[int, ...] = ()
    output_validate: tuple[int, ...] = ()
    # Output webhooks: the OpenAI-shaped answer is POSTed whole (non-streamed answers).
    output_hooks: tuple[int, ...] = ()
    # Every run, for spans and llm_gateway_guardrails_* metrics (shared with the request's log).
    runs: list[GuardrailRun] = field(default_factory=list)
    # Where the request's texts are, found once for every input guardrail (None: not yet, or
    # a webhook replaced the request).
    places: list[Place] | None = None

    def ran(
        self, gid: int, phase: str, result: str, start_ns: int, categories: Sequence[str] = ()
    ) -> None:
        if result == "flag":
            # Audit findings are logged by category only, never the text.
            name = self.infos[gid].name
            log.info("guardrail %r flagged %s (%s)", name, phase, ", ".join(categories))
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

    def texts(self, req: dict[str, Any]) -> list[Place]:
        places = self.places
        if places is None:
            places = self.places = _request_texts(req)
        return places


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
    im, iv, om, ov, oh = (tuple(p) for p in parts)
    return im, iv, om, ov, oh


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


def _texts(messages: Any) -> list[Place]:
    """Every text in chat messages or Responses input items (tool outputs included), and the
    strings of a list input (embeddings)."""
    out: list[Place] = []
    for i, m in enumerate(messages if isinstance(messages, list) else ()):
        if isinstance(m, str):
            out.append((messages, i))
            continue
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, str):
            out.append((m, "content"))
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    out.append((part, "text"))
        elif m.get("type") == "function_call_output" and isinstance(m.get("output"), str):
            out.append((m, "output"))
    return out


def _request_texts(req: dict[str, Any]) -> list[Place]:
    out = _texts(req.get("messages"))
    if isinstance(req.get("instructions"), str):
        out.append((req, "instructions"))
    inputs = req.get("input")
    if isinstance(inputs, str):
        out.append((req, "input"))
    else:
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


async def mutate_input(
    plan: GuardPlan, req: dict[str, Any], session: aiohttp.ClientSession | None
) -> bool:
    """Redacts the request in place, guardrail by guardrail, in the order listed; true when
    anything in it changed."""
    changed = False
    for gid in plan.input_mutate:
        info = plan.infos[gid]
        t0 = now_ns()
        if info.kind == "webhook":
            result, errored = await _webhook(info, req, "input", session)
            if isinstance(result, GatewayError):
                plan.ran(gid, "input", "error" if errored else "block", t0)
                raise result
            if isinstance(result, dict):
                req.clear()
                req.update(result)
                plan.places = None  # a new request: its texts are elsewhere
                changed = True
            plan.ran(gid, "input", "error" if errored else "mutate" if result else "pass", t0)
            continue
        found: list[str] = []
        ids = [gid]
        for container, key in plan.texts(req):
            text = container[key]
            redacted, findings = plan.set.redact(ids, text)
            if redacted != text:
                container[key] = redacted
                found.extend(f.category for f in findings)
                changed = True
        plan.ran(gid, "input", "mutate" if found else "pass", t0, found)
    return changed


def validate_builtin(
    plan: GuardPlan, req: dict[str, Any], adm: Admission
) -> tuple[GatewayError | None, list[int]]:
    """The built-in input validators, now (a scan each, microseconds): the first blocking
    verdict or None, and the webhook validators still to call."""
    text = None
    webhooks = []
    for gid in plan.input_validate:
        info = plan.infos[gid]
        if info.kind == "webhook":
            webhooks.append(gid)
            continue
        t0 = now_ns()
        if info.kind == "metadata-validation":
            flagged = any(v[0] == gid for v in adm.metadata_violations)
            cats = ["METADATA"]
        else:
            if text is None:
                text = "\n".join(str(c[k]) for c, k in plan.texts(req))
            check = plan.set.check(gid, text)
            flagged = check is not None and check.flagged
            cats = [f.category for f in check.findings] if check else []
            cats = cats or [info.kind.upper()]
        verdict = decide(info.enforcing_strategy, Outcome.FLAG if flagged else Outcome.PASS)
        plan.ran(gid, "input", verdict.value, t0, cats if flagged else [])
        if verdict.blocks:
            return blocked(info, cats), []
    return None, webhooks


async def validate_hooks(
    plan: GuardPlan,
    req: dict[str, Any],
    webhooks: list[int],
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
        redacted: dict[int, str] = {}
        for i, text in enumerate(contents):
            if text is None:
                continue
            checked = _check_output(plan, text)
            if isinstance(checked, GatewayError):
                return checked
            if checked != text:
                redacted[i] = checked
        if not redacted:
            return payload
        answer = _decode(payload)
        for i, text in redacted.items():
            answer["choices"][i]["message"]["content"] = text
        return _encode(answer)
    try:
        answer = _decode(payload)
    except msgspec.DecodeError:
        return payload
    changed = False
    for container, key in answer_texts(answer):
        text = container[key]
        checked = _check_output(plan, text)
        if isinstance(checked, GatewayError):
            return checked
        if checked != text:
            container[key] = checked
            changed = True
    return _encode(answer) if changed else payload


def _check_output(plan: GuardPlan, text: str) -> str | GatewayError:
    """One answer text through the output guardrails: the text (redacted) or the refusal."""
    for gid in plan.output_validate:
        info = plan.infos[gid]
        t0 = now_ns()
        check = plan.set.check(gid, text) if info.kind != "webhook" else None
        if check is None or not check.flagged:
            plan.ran(gid, "output", "pass", t0)
            continue
        cats = [f.category for f in check.findings]
        verdict = decide(info.enforcing_strategy, Outcome.FLAG)
        plan.ran(gid, "output", verdict.value, t0, cats)
        if verdict.blocks:
            return blocked(info, cats)
    for gid in plan.output_mutate:
        t0 = now_ns()
        redacted, findings = plan.set.redact([gid], text)
        cats = [f.category for f in findings]
        plan.ran(gid, "output", "mutate" if redacted != text else "pass", t0, cats)
        text = redacted
    return text


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
