"""Medians over rounds, the issue-3 targets, and the printed tables."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TARGETS = ("direct", "floor", "gateway", "without")
# "without" (the gateway with one feature off, `--compare`) is labelled by the CLI.
LABELS = {"direct": "direct mock", "floor": "bare proxy (floor)", "gateway": "tollway"}


def median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else float("nan")


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median per (target, mode) over rounds, and the derived figures the targets are about."""
    out: dict[str, Any] = {}
    for target in TARGETS:
        for mode in ("saturation", "rate"):
            rows = [r for r in runs if r["target"] == target and r["mode"] == mode]
            if not rows:
                continue
            out.setdefault(target, {})[mode] = {
                key: round(median([r["result"][key] for r in rows]), 3)
                for key in ("rps", "p50_ms", "p99_ms", "ttfb_p50_ms")
            } | {"failed": sum(r["result"]["failed"] for r in rows), "rounds": len(rows)}
        rss = [r["rss_after"] for r in runs if r["target"] == target and r.get("rss_after")]
        if rss:
            out[target]["rss_worker_max_mb"] = round(max(s["max_process_mb"] for s in rss), 1)
            out[target]["rss_tree_max_mb"] = round(max(s["total_mb"] for s in rss), 1)
    direct_rate = out.get("direct", {}).get("rate")
    for target in ("floor", "gateway", "without"):
        rate = out.get(target, {}).get("rate")
        if direct_rate and rate:
            out[target]["added_p50_ms"] = round(rate["p50_ms"] - direct_rate["p50_ms"], 3)
            out[target]["added_p99_ms"] = round(rate["p99_ms"] - direct_rate["p99_ms"], 3)
    floor_sat = out.get("floor", {}).get("saturation")
    gateway_sat = out.get("gateway", {}).get("saturation")
    if floor_sat and gateway_sat and floor_sat["rps"] > 0:
        out["gateway_floor_ratio"] = round(gateway_sat["rps"] / floor_sat["rps"], 3)
    # A feature's cost: the median over rounds of each round's pair (with and without it, run
    # back to back), which a slow spell of the machine moves far less than the medians of each.
    pairs = {}
    for r in runs:
        if r["mode"] == "saturation" and r["target"] in ("gateway", "without"):
            pairs.setdefault(r["round"], {})[r["target"]] = r["result"]["rps"]
    costs = [(1 - p["gateway"] / p["without"]) * 100 for p in pairs.values()
             if p.get("gateway") and p.get("without")]  # fmt: skip
    if costs:
        out["feature_cost_pct"] = round(median(costs), 1)
        out["feature_cost_rounds_pct"] = [round(c, 1) for c in costs]
    return out


def feature_cost(summary: dict[str, Any], feature: str) -> str:
    """One line: what `feature` costs, from the gateway runs with and without it."""
    gateway, without = summary.get("gateway", {}), summary.get("without", {})
    try:
        p99 = gateway["added_p99_ms"] - without["added_p99_ms"]
        rounds = ", ".join(f"{c:+.1f}%" for c in summary["feature_cost_rounds_pct"])
        return (
            f"cost of {feature}: {summary['feature_cost_pct']:.1f}% of the throughput at"
            f" saturation (median of the rounds' pairs: {rounds}; medians"
            f" {_num(gateway['saturation']['rps'])} with,"
            f" {_num(without['saturation']['rps'])} without), {p99:+.2f} ms added p99 at the"
            " fixed rate"
        )
    except KeyError:
        return f"cost of {feature}: not measured"


@dataclass(frozen=True)
class Check:
    name: str
    measured: float
    goal: float
    higher_is_better: bool
    unit: str

    @property
    def passed(self) -> bool:
        if math.isnan(self.measured):
            return False
        return self.measured >= self.goal if self.higher_is_better else self.measured <= self.goal

    def row(self) -> tuple[str, str, str, str]:
        sign = ">=" if self.higher_is_better else "<="
        if math.isnan(self.measured):
            return (self.name, "n/a", f"{sign} {_num(self.goal)}{self.unit}", "n/a")
        verdict = "PASS"
        if not self.passed:
            miss = abs(self.measured - self.goal) / self.goal * 100 if self.goal else 0.0
            verdict = f"MISS by {miss:.0f}%"
        return (
            self.name,
            f"{_num(self.measured)}{self.unit}",
            f"{sign} {_num(self.goal)}{self.unit}",
            verdict,
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "measured": self.measured,
            "goal": self.goal,
            "pass": self.passed,
        }


# Issue 14's targets, one worker on one CPU: throughput as a ratio to the floor measured in
# the same run (streams 0.8x; the default config 0.7x; with a budget and the built-in
# guardrails 0.6x), added p99 at 350 RPS, RSS per worker.
RSS_GOAL_MB = 110.0


def ratio_goal(stream: bool, guarded: bool) -> float:
    return 0.8 if stream else 0.6 if guarded else 0.7


def checks(
    summary: dict[str, Any], stream: bool, rate: float, guarded: bool = False
) -> list[Check]:
    gateway = summary.get("gateway", {})
    nan = float("nan")
    sat_rps = gateway.get("saturation", {}).get("rps", nan)
    out = [
        Check(
            "streams/s at saturation" if stream else "RPS at saturation",
            sat_rps,
            1500.0 if stream else 3500.0,
            True,
            "",
        ),
        Check(
            "gateway / floor RPS",
            summary.get("gateway_floor_ratio", nan),
            ratio_goal(stream, guarded),
            True,
            "x",
        ),
    ]
    if not stream:
        out += [
            Check(
                f"added p50 at {rate:g} RPS", gateway.get("added_p50_ms", nan), 1.0, False, " ms"
            ),
            Check(
                f"added p99 at {rate:g} RPS", gateway.get("added_p99_ms", nan), 1.5, False, " ms"
            ),
        ]
    rss = gateway.get("rss_worker_max_mb", nan)
    out.append(Check("RSS per worker", rss, RSS_GOAL_MB, False, " MB"))
    return out


def _num(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def results_table(summary: dict[str, Any], args: Any) -> str:
    present = [t for t in TARGETS if t in summary]
    unit = "streams/s" if args.stream else "RPS"

    def cell(target: str, fn: Any) -> str:
        try:
            return str(fn(summary[target]))
        except (KeyError, TypeError):
            return "-"

    def pair(a: float, b: float) -> str:
        return f"{_num(a)} / {_num(b)}"

    rows = [
        [f"{unit} at saturation (c={args.concurrency})"]
        + [cell(t, lambda s: _num(s["saturation"]["rps"])) for t in present],
        ["p50 / p99 ms at saturation"]
        + [
            cell(t, lambda s: pair(s["saturation"]["p50_ms"], s["saturation"]["p99_ms"]))
            for t in present
        ],
        [f"p50 / p99 ms at {args.rate:g} RPS (open loop)"]
        + [cell(t, lambda s: pair(s["rate"]["p50_ms"], s["rate"]["p99_ms"])) for t in present],
        ["added p50 / p99 ms vs direct"]
        + [cell(t, lambda s: pair(s["added_p50_ms"], s["added_p99_ms"])) for t in present],
        ["RSS MB: largest worker / tree"]
        + [
            cell(t, lambda s: f"{s['rss_worker_max_mb']:.0f} / {s['rss_tree_max_mb']:.0f}")
            for t in present
        ],
    ]
    if args.stream:
        rows.insert(
            3,
            ["first byte p50 ms at saturation"]
            + [cell(t, lambda s: _num(s["saturation"]["ttfb_p50_ms"])) for t in present],
        )
    text = table(rows, ["", *[LABELS[t] for t in present]])
    if "gateway_floor_ratio" in summary:
        text += f"\ngateway / floor throughput ratio: {summary['gateway_floor_ratio']:.2f}x"
    return text


def checks_table(found: Sequence[Check]) -> str:
    return table([c.row() for c in found], ["target (issue 14)", "measured", "goal", "result"])
