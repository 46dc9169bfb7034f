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
from .features import FEATURES, GatewayConfig, resolve
from .oha import Oha, OhaFlags, find_oha, oha_threads
from .procs import CpuSampler, HarnessError, Service, Services, free_port

HERE = Path(__file__).resolve().parent.parent  # loadtest/
MODEL = "mock/gpt-4o-mini"
METADATA = '{"project_id":"p1"}'
CHAT_PATH = "/v1/chat/completions"
LOAD_CPU_WARN_PCT = 90.0  # mean use of the mock + oha CPUs above which they may be the limit
FOREIGN_CPU_WARN_PCT = 15.0  # use of the SUT's CPUs by other programs that disturbs a run


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


def cpu_ids(spec: str | None) -> set[str]:
    """The CPUs of a taskset list such as "0", "1-3" or "0,2"."""
    ids: set[str] = set()
    for part in (spec or "").split(","):
        lo, _, hi = part.partition("-")
        if lo:
            ids.update(str(i) for i in range(int(lo), int(hi or lo) + 1))
    return ids


def chat_body(stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Say hello in one short sentence."},
        ],
        "max_tokens": 25,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


class Harness:
    def __init__(self, args: argparse.Namespace, services: Services, oha: Oha, key: str) -> None:
        self.args = args
        self.services = services
        self.oha = oha
        self.body = chat_body(args.stream)
        # The same headers to every target, so none does less parsing than another.
        self.headers = {
            "content-type": "application/json",
            "authorization": f"Bearer {key}",
            "x-tfy-metadata": METADATA,
        }
        self.key = key
        self.runs: list[dict[str, Any]] = []
        self.mock: Service | None = None
        self.sink: Service | None = None

    def start_mock(self) -> Service:
        port = free_port()
        argv = [
            "tollway",
            "mock-upstream",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(self.args.mock_workers),
            "--tokens",
            "25",
            "--latency-ms",
            "0",
            "--itl-ms",
            "0",
        ]
        self.mock = self.services.start("mock", argv, port=port, cpus=self.args.load_cpus)
        return self.mock

    def start_sink(self) -> Service:
        port = free_port()
        argv = [sys.executable, str(HERE / "otlp_sink.py"), "--port", str(port)]
        self.sink = self.services.start("otlp-sink", argv, port=port, cpus=self.args.load_cpus)
        return self.sink

    def start_floor(self) -> Service:
        assert self.mock is not None
        port = free_port()
        argv = [
            sys.executable,
            str(HERE / "bare_proxy.py"),
            "--port",
            str(port),
            "--upstream",
            self.mock.url,
            "--workers",
            str(self.args.workers),
        ]
        return self.services.start("floor", argv, port=port, cpus=self.args.sut_cpus)

    def start_gateway(self, config: GatewayConfig) -> Service:
        assert self.mock is not None
        port = free_port()
        env = {"TOLLWAY_MOCK_URL": self.mock.url + "/v1", "TOLLWAY_LOADTEST_KEY": self.key}
        if self.sink is not None:
            env["TOLLWAY_OTLP_URL"] = self.sink.url
        argv = [
            "tollway",
            "serve",
            "--config",
            str(config.path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(self.args.workers),
        ]
        return self.services.start(
            "gateway",
            argv,
            port=port,
            cpus=self.args.sut_cpus,
            env=env,
            ready_path="/readyz",
            timeout_s=60.0,
        )

    def load(
        self, service: Service, target: str, mode: str, round_no: int, **kw: Any
    ) -> dict[str, Any]:
        assert self.mock is not None
        watched = [s for s in (self.mock, self.sink, service) if s is not None]
        watched = list(dict.fromkeys(watched))
        label = f"[{round_no}/{self.args.rounds}] {report.LABELS[target]:<18} {mode:<10}"
        tty = sys.stdout.isatty()
        if tty:  # a live "running" line, overwritten by the result
            print(f"{label} ...", end="", flush=True)
        with CpuSampler(watched) as sampler:
            result = self.oha.run(
                service.url + CHAT_PATH,
                self.body,
                self.headers,
                concurrency=self.args.concurrency,
                **kw,
            )
        cpu = sampler.report()
        load_cpus = [v for k, v in cpu.cpu_mean.items() if str(k) in cpu_ids(self.args.load_cpus)]
        load_pct = sum(load_cpus) / len(load_cpus) if load_cpus else 0.0
        # CPU time on the SUT's CPUs that the SUT did not use: another program (a build, a
        # neighbour) was competing, and this run's figures are disturbed.
        sut_busy = sum(v for k, v in cpu.cpu_mean.items() if str(k) in cpu_ids(self.args.sut_cpus))
        sut_own = cpu.service_mean.get(service.name, 0.0) if target != "direct" else 0.0
        foreign_pct = max(sut_busy - sut_own, 0.0)
        unit = "streams/s" if self.args.stream else "RPS"
        print(
            ("\r" if tty else "")
            + f"{label} {result.rps:>9,.0f} {unit}  p50 {result.p50_ms:7.2f} ms"
            f"  p99 {result.p99_ms:7.2f} ms  failed {result.failed}"
            f"  | mock cpu {cpu.service_mean.get('mock', 0):.0f}%"
            f"  load cpus {load_pct:.0f}%"
            + (
                f"  sut cpu {cpu.service_mean.get(service.name, 0):.0f}%"
                if target != "direct"
                else ""
            ),
            flush=True,
        )
        if target != "direct" and mode == "saturation" and load_pct >= LOAD_CPU_WARN_PCT:
            print(
                f"    warning: the mock + oha CPUs were {load_pct:.0f}% busy: the load side may be"
                " limiting this figure (give them more CPUs with --load-cpus)"
            )
        if foreign_pct >= FOREIGN_CPU_WARN_PCT:
            print(
                f"    warning: other processes used {foreign_pct:.0f}% of CPU {self.args.sut_cpus}"
                " during this run; its figures are disturbed (the median of rounds helps)"
            )
        if result.failed:
            print(
                f"    warning: {result.failed} failed requests: statuses {result.statuses}"
                f" errors {result.errors}; see the logs"
            )
        run = {
            "round": round_no,
            "target": target,
            "mode": mode,
            "result": result.as_dict(),
            "cpu": cpu.as_dict(),
            "load_cpu_mean_pct": round(load_pct, 1),
            "foreign_sut_cpu_pct": round(foreign_pct, 1),
        }
        self.runs.append(run)
        return run

    def measure(self, service: Service, target: str, round_no: int) -> None:
        """Warm up, then a saturation run and a fixed-rate run, with RSS before and after."""
        args = self.args
        if args.warmup > 0:
            self.oha.run(
                service.url + CHAT_PATH,
                self.body,
                self.headers,
                concurrency=args.concurrency,
                duration_s=args.warmup,
            )
        before = service.rss()
        self.load(service, target, "saturation", round_no, duration_s=args.duration)
        rate_run = self.load(
            service, target, "rate", round_no, duration_s=args.duration, rate=args.rate
        )
        after = service.rss()
        if target != "direct":
            rate_run["rss_before"] = before.__dict__
            rate_run["rss_after"] = after.__dict__
            print(
                f"    RSS {service.name}: largest process {before.max_process_mb:.0f} ->"
                f" {after.max_process_mb:.0f} MB, tree {before.total_mb:.0f} ->"
                f" {after.total_mb:.0f} MB ({after.processes} processes)"
            )
        if rate_run["result"]["rps"] < 0.95 * args.rate:
            print(
                f"    warning: {report.LABELS[target]} did not hold {args.rate:g} RPS"
                f" ({rate_run['result']['rps']:.0f})"
            )

    def comparison(self, config: GatewayConfig | None) -> None:
        assert self.mock is not None
        for round_no in range(1, self.args.rounds + 1):
            if round_no == 1 and self.args.warmup > 0:
                self.oha.run(
                    self.mock.url + CHAT_PATH,
                    self.body,
                    self.headers,
                    concurrency=self.args.concurrency,
                    duration_s=self.args.warmup,
                )
            self.measure(self.mock, "direct", round_no)
            # One system under test at a time: each is started, measured and stopped in turn.
            floor = self.start_floor()
            self.measure(floor, "floor", round_no)
            self.services.stop(floor)
            if config is not None:
                gateway = self.start_gateway(config)
                self.measure(gateway, "gateway", round_no)
                self.services.stop(gateway)

    def memory(self, config: GatewayConfig | None, total: int) -> dict[str, Any]:
        service = self.start_gateway(config) if config is not None else self.start_floor()
        step = self.args.memory_step
        self.oha.run(
            service.url + CHAT_PATH,
            self.body,
            self.headers,
            concurrency=self.args.concurrency,
            duration_s=max(self.args.warmup, 0.5),
        )
        series = [{"requests": 0, **service.rss().__dict__}]
        print(f"memory: {service.name} RSS at start {series[0]['max_process_mb']:.1f} MB")
        sent = 0
        while sent < total:
            n = min(step, total - sent)
            result = self.oha.run(
                service.url + CHAT_PATH,
                self.body,
                self.headers,
                concurrency=self.args.concurrency,
                requests=n,
            )
            sent += n
            series.append(
                {
                    "requests": sent,
                    **service.rss().__dict__,
                    "rps": round(result.rps, 1),
                    "failed": result.failed,
                }
            )
            print(
                f"memory: {sent:>9,} requests  RSS largest process"
                f" {series[-1]['max_process_mb']:.1f} MB  tree {series[-1]['total_mb']:.1f} MB"
                f"  ({result.rps:,.0f} RPS, {result.failed} failed)",
                flush=True,
            )
        self.services.stop(service)
        at_100k = next((s for s in series if s["requests"] >= step), series[-1])
        end = series[-1]
        growth = (end["max_process_mb"] / at_100k["max_process_mb"] - 1) * 100
        return {
            "target": service.name,
            "series": series,
            "growth_pct_100k_to_end": round(growth, 2),
            "rss_end_mb": round(end["max_process_mb"], 1),
        }


def _sigterm(signum: int, frame: object) -> NoReturn:
    # Turn SIGTERM into an exception so the `finally` blocks stop every process we started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    # Also when started in the background with SIGINT ignored: Ctrl-C / kill -INT must clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
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
        with Services(log_dir) as services:
            harness = Harness(args, services, oha, secrets.token_urlsafe(24))
            harness.start_mock()
            if config is not None and config.needs_otlp_sink:
                harness.start_sink()
            started = time.monotonic()
            try:
                if args.memory:
                    doc["memory"] = harness.memory(config, args.memory)
                else:
                    harness.comparison(config)
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
            report.Check("RSS per worker at end", mem["rss_end_mb"], 150.0, False, " MB"),
        ]
        print()
    else:
        summary = report.summarize(doc["runs"])
        doc["summary"] = summary
        print("\n" + report.results_table(summary, args))
        if "gateway" in summary:
            found = report.checks(summary, args.stream, args.rate)
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
