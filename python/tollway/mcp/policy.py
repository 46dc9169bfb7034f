"""Guardrails on tool calls: `mcp_tool_pre_invoke_guardrails` on the arguments before the
call (a block means the server is never called), `mcp_tool_post_invoke_guardrails` on the
result (redact or block). Built-in pii/secrets/regex scan every string value; webhooks get
`{"server", "tool", "arguments"}` (pre) or `{"server", "tool", "result"}` (post) and may
answer `transformed` with a replacement of that object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from tollway.engine import ToolAdmission
from tollway.guardrails import GuardrailInfo, Guardrails, Outcome, decide
from tollway.guardrails.webhook import call_webhook
from tollway.telemetry import GuardrailRun, now_ns

__all__ = ["Blocked", "ToolGuard", "tool_guard"]


class Blocked(Exception):
    """A guardrail blocked the call; the message names it and the categories found."""

    def __init__(self, name: str, phase: str, categories: list[str]) -> None:
        found = f" ({', '.join(sorted(set(categories)))})" if categories else ""
        super().__init__(f"Blocked by guardrail '{name}'{found} ({phase}-tool)")
        self.guardrail = name


@dataclass(slots=True)
class ToolGuard:
    set: Guardrails
    infos: tuple[GuardrailInfo, ...]
    pre: list[int]
    post: list[int]
    rule_id: str | None
    runs: list[GuardrailRun] = field(default_factory=list)

    def _ran(self, gid: int, phase: str, result: str, t0: int, cats: list[str]) -> None:
        name = self.infos[gid].name
        end, categories = now_ns(), sorted(set(cats))
        self.runs.append(
            GuardrailRun(
                name=name,
                phase=phase,
                result=result,
                start_ns=t0,
                end_ns=end,
                categories=categories,
            )
        )

    async def check(
        self,
        phase: Literal["pre", "post"],
        server: str,
        tool: str,
        value: dict[str, Any],
        session: aiohttp.ClientSession | None,
    ) -> dict[str, Any]:
        """`value` (arguments or result) after the phase's guardrails, or raises `Blocked`."""
        ids = self.pre if phase == "pre" else self.post
        label = "input" if phase == "pre" else "output"
        for gid in ids:
            info = self.infos[gid]
            t0 = now_ns()
            if info.kind == "webhook":
                value = await self._webhook(info, phase, server, tool, value, session, t0, gid)
                continue
            if info.kind == "metadata-validation":
                continue
            if info.operation == "mutate":
                found: list[str] = []

                def redact(text: str, gid: int = gid, found: list[str] = found) -> str:
                    out, findings = self.set.redact([gid], text)
                    found.extend(f.category for f in findings)
                    return out

                value = _map_strings(value, redact)
                self._ran(gid, label, "mutate" if found else "pass", t0, found)
                continue
            cats: list[str] = []
            for text in _strings(value):
                check = self.set.check(gid, text)
                if check is not None and check.flagged:
                    cats.extend(f.category for f in check.findings)
                    cats = cats or [info.kind.upper()]
            verdict = decide(info.enforcing_strategy, Outcome.FLAG if cats else Outcome.PASS)
            self._ran(gid, label, verdict.value, t0, cats)
            if verdict.blocks:
                raise Blocked(info.name, phase, cats)
        return value

    async def _webhook(
        self,
        info: GuardrailInfo,
        phase: Literal["pre", "post"],
        server: str,
        tool: str,
        value: dict[str, Any],
        session: aiohttp.ClientSession | None,
        t0: int,
        gid: int,
    ) -> dict[str, Any]:
        label: Literal["input", "output"] = "input" if phase == "pre" else "output"
        if session is None or info.url is None:
            return value
        field_name = "arguments" if phase == "pre" else "result"
        result = await call_webhook(
            session,
            name=info.name,
            url=info.url,
            timeout_ms=info.timeout_ms or 1000,
            strategy=info.enforcing_strategy,
            payload={"server": server, "tool": tool, field_name: value},
            phase=label,
            headers=info.headers,
        )
        if result.verdict.blocks:
            self._ran(gid, label, "block", t0, [])
            raise Blocked(info.name, phase, [])
        new = result.transformed.get(field_name) if result.transformed else None
        if info.operation == "mutate" and isinstance(new, dict):
            self._ran(gid, label, "mutate", t0, [])
            return new
        self._ran(gid, label, result.verdict.value, t0, [])
        return value


def tool_guard(
    guardrails: Guardrails | None, infos: tuple[GuardrailInfo, ...], adm: ToolAdmission
) -> ToolGuard | None:
    """The call's guardrails, as `admit_tool` chose them (rule and `X-TFY-GUARDRAILS`)."""
    pre, post = adm.tool_pre, adm.tool_post
    if guardrails is None or (not pre and not post):
        return None
    return ToolGuard(guardrails, infos, pre, post, adm.guardrail_rule)


def _strings(value: Any) -> list[str]:
    out: list[str] = []
    _map_strings(value, lambda s: out.append(s) or s)  # type: ignore[func-returns-value]
    return out


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """`value` with `fn` applied to every string in it (keys are left alone)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value
