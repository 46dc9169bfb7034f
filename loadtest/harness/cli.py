"""`loadtest/run`: Tollway against the bare pass-through floor and the direct mock, one command."""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from . import report
from .features import FEATURES, resolve
from .oha import Oha, OhaFlags, find_oha, oha_threads
from .procs import HarnessError, Services, cpus_awake, keep_off_sut
from .runner import HERE, MODEL, Harness


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="loadtest/run", description=__doc__)
    p.add_argument("--duration", type=float, default=15.0, help="seconds per run (default 15)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of discarded load per start")
    p.add_argument("--rounds", type=int, default=3, help="floor/gateway alternations; medians")
    p.add_argument("--concurrency", type=int, default=32, help="connections at saturation")
    p.add_argument("--rate", type=float, default=350.0, help="fixed-rate run, requests/s")
    p.add_argument("--stream", action="store_true", help="streaming chat (25 one-token chunks)")
    p.add_argument("--workers", type=int, default=1, help="Granian workers of floor and gateway")
    p.add_argument("--mock-workers", type=int, default=2)
    p.add_argument("--sut-cpus", default="0", help="taskset CPU list of the system under test")
    p.add_argument("--load-cpus", default="1", help="taskset CPU list of mock, sink and oha")
    p.add_argument(
        "--no-cpus-awake",
        dest="cpus_awake",
        action="store_false",
        help="let idle CPUs sleep during the fixed-rate runs (by default the harness holds"
        " /dev/cpu_dma_latency at 0 while they run, as latency benchmarks do)",
    )
    p.add_argument("--config", type=Path, default=HERE / "gateway.yaml")
    p.add_argument("--skip-gateway", action="store_true", help="direct mock and floor only")
    p.add_argument(
        "--memory",
        type=int,
        metavar="N",
        help="send N requests to the gateway and "
        "report RSS at 100k and at the end, instead of the comparison",
    )
    p.add_argument("--memory-step", type=int, default=100_000, help=argparse.SUPPRESS)
    p.add_argument("--smoke", action="store_true", help="tiny run that only proves it works (CI)")
    p.add_argument("--out", type=Path, help="also write the JSON result here")
    p.add_argument("--no-install", action="store_true", help="never `cargo install oha`")
    p.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    for feature in FEATURES:
        p.add_argument(
            f"--no-{feature.name}",
            action="append_const",
            dest="off",
            const=feature.name,
            help=f"switch off {feature.help}",
        )
    p.add_argument(
        "--compare",
        metavar="FEATURE",
        choices=[f.name for f in FEATURES],
        help="each round also measures the gateway without FEATURE (right after it, same"
        " machine state) and reports the feature's cost in throughput and latency",
    )
    args = p.parse_args(argv)
    args.off = args.off or []
    if args.smoke:
        args.duration, args.warmup, args.rounds, args.rate = 1.0, 0.3, 1, 100.0
    return args


def require_tollway(need_serve: bool) -> None:
    exe = shutil.which("tollway")
    hint = "install the gateway first: `pip install .` (or `pip install -e .`) in the repo root"
    if exe is None:
        raise HarnessError(f"`tollway` is not on PATH; {hint}")
    for sub in (
        ["--help"],
        ["mock-upstream", "--help"],
        *([["serve", "--help"]] if need_serve else []),
    ):
        done = subprocess.run([exe, *sub], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise HarnessError(
                f"`tollway {' '.join(sub)}` failed ({done.returncode}); {hint}\n"
                f"{done.stderr.strip()[-2000:]}"
            )


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tollway": version("tollway"),
        "granian": version("granian"),
        "aiohttp": version("aiohttp"),
    }


def _sigterm(signum: int, frame: object) -> NoReturn:
    # Turn SIGTERM into an exception so the `finally` blocks stop every process we started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    # Also when started in the background with SIGINT ignored: Ctrl-C / kill -INT must clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # The harness itself (its CPU sampler wakes every half second) runs beside the load, not on
    # the system under test's CPUs, where it would preempt a worker at the latency's tail.
    keep_off_sut(args.load_cpus)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results_dir = HERE / "results"
    log_dir = results_dir / f"{stamp}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "started": stamp,
        "machine": machine(),
        "options": {k: str(v) for k, v in vars(args).items()},
    }
    try:
        require_tollway(need_serve=not args.skip_gateway)
        path = find_oha(install=not args.no_install)
        flags = OhaFlags.detect(path)
        oha = Oha(path, flags, args.load_cpus, oha_threads(args.load_cpus))
        doc["oha"] = {
            "path": str(path),
            "version": flags.version,
            "flags": [*flags.json, *flags.extra],
        }
        m = doc["machine"]
        print(
            f"machine: {m['nproc']} CPUs, {m['cpu_model']}; python {m['python']},"
            f" granian {m['granian']}, aiohttp {m['aiohttp']}, tollway {m['tollway']}"
        )
        print(f"oha: {flags.version} ({path}); flags {' '.join([*flags.json, *flags.extra])}")
        print(
            f"pinning: system under test on CPU {args.sut_cpus}, mock + oha on CPU"
            f" {args.load_cpus}; {args.workers} worker(s); logs in {log_dir}"
        )
        with cpus_awake(args.cpus_awake) as idle:
            doc["idle_cpus_at_rate"] = idle
        print(
            f"idle CPUs during the {args.rate:g} RPS runs: {idle}"
            + ("" if args.cpus_awake else " (--no-cpus-awake)")
        )
        config = None if args.skip_gateway else resolve(args.config, args.off, log_dir)
        if config is not None:
            doc["gateway_config"] = config.as_dict()
            print(
                f"gateway config: {config.path}; features on: {', '.join(config.enabled) or 'none'}"
                f"; off: {', '.join(config.disabled) or 'none'}"
            )
            for name in sorted(set(args.off) & set(config.absent)):
                print(
                    f"--no-{name}: not yet implemented (no {name} part in {args.config.name});"
                    " nothing to switch off"
                )
        without = None
        if config is not None and args.compare:
            if args.compare not in config.enabled:
                raise HarnessError(f"--compare {args.compare}: it is not on in {config.path}")
            without = resolve(args.config, [*args.off, args.compare], log_dir)
            if without.model != config.model:
                raise HarnessError(f"--compare {args.compare}: it changes the requested model")
            report.LABELS["without"] = f"tollway --no-{args.compare}"
            doc["compare_config"] = without.as_dict()
        with Services(log_dir) as services:
            model = config.model if config is not None else MODEL
            harness = Harness(args, services, oha, secrets.token_urlsafe(24), model)
            harness.start_mock()
            if config is not None and config.needs_otlp_sink:
                harness.start_sink()
            started = time.monotonic()
            try:
                if args.memory:
                    doc["memory"] = harness.memory(config, args.memory)
                else:
                    harness.comparison(config, without)
            finally:
                doc["runs"] = harness.runs
                doc["elapsed_s"] = round(time.monotonic() - started, 1)
        return finish(args, doc, stamp, results_dir)
    except HarnessError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        doc["error"] = str(exc)
        write(doc, results_dir / f"{stamp}.json", args.out)
        return 2
    except (KeyboardInterrupt, SystemExit) as exc:
        print("\ninterrupted; every process started by the harness was stopped", file=sys.stderr)
        doc["error"] = "interrupted"
        path = write(doc, results_dir / f"{stamp}.json", args.out)
        print(f"partial results: {path}", file=sys.stderr)
        return exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 130


def finish(args: argparse.Namespace, doc: dict[str, Any], stamp: str, results_dir: Path) -> int:
    found: list[report.Check] = []
    if args.memory:
        mem = doc["memory"]
        found = [
            report.Check(
                f"RSS growth {args.memory_step:,} -> {args.memory:,} requests",
                mem["growth_pct_100k_to_end"],
                5.0,
                False,
                "%",
            ),
            report.Check(
                "RSS per worker at end", mem["rss_end_mb"], report.RSS_GOAL_MB, False, " MB"
            ),
        ]
        print()
    else:
        summary = report.summarize(doc["runs"])
        doc["summary"] = summary
        print("\n" + report.results_table(summary, args))
        if "gateway" in summary:
            on = set(doc.get("gateway_config", {}).get("enabled", ()))
            guarded = {"budgets", "guardrails"} <= on
            found = report.checks(summary, args.stream, args.rate, guarded)
            if args.compare:
                print("\n" + report.feature_cost(summary, args.compare))
                if args.compare == "logs":  # issue 18: at most 5% of the throughput
                    found.append(
                        report.Check(
                            "request log cost",
                            summary.get("feature_cost_pct", float("nan")),
                            5.0,
                            False,
                            "%",
                        )
                    )
    if found:
        doc["checks"] = [c.as_dict() for c in found]
        print("\n" + report.checks_table(found))
        if not args.memory:
            print(
                "(absolute figures depend on the machine; where it cannot reach one, the ratio"
                " to the floor decides)"
            )
    path = write(doc, results_dir / f"{stamp}.json", args.out)
    print(f"\nresults: {path}" + (f" and {args.out}" if args.out else ""))
    if args.fail_on_miss and not args.smoke and not all(c.passed for c in found):
        return 1
    return 0


def write(doc: dict[str, Any], path: Path, extra: Path | None) -> Path:
    text = json.dumps(doc, indent=2, default=str) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if extra is not None:
        extra.parent.mkdir(parents=True, exist_ok=True)
        extra.write_text(text)
    return path
