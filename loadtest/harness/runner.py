"""One load-test session: starts the mock, floor and gateway in turn and runs oha against them."""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import report
from .features import GatewayConfig, resolve
from .oha import Oha, OhaFlags, find_oha, oha_threads
from .procs import CpuSampler, Service, Services, cpu_ids, cpus_awake, free_port

HERE = Path(__file__).resolve().parent.parent  # loadtest/
MODEL = "mock/gpt-4o-mini"
METADATA = '{"project_id":"p1"}'
CHAT_PATH = "/v1/chat/completions"
LOAD_CPU_WARN_PCT = 90.0  # mean use of the mock + oha CPUs above which they may be the limit
# Before a fixed-rate run the system under test is let finish what the saturation run left
# (CPU under SETTLE_QUIET_PCT for a second), for at most SETTLE_TIMEOUT_S.
SETTLE_QUIET_PCT = 3.0
SETTLE_TIMEOUT_S = 60.0
FOREIGN_CPU_WARN_PCT = 15.0  # use of the SUT's CPUs by other programs that disturbs a run


def chat_body(stream: bool, model: str = MODEL) -> bytes:
    body: dict[str, Any] = {
        "model": model,
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
    def __init__(
        self,
        args: argparse.Namespace,
        services: Services,
        oha: Oha,
        key: str,
        model: str = MODEL,
    ) -> None:
        self.args = args
        self.services = services
        self.oha = oha
        self.body = chat_body(args.stream, model)
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
        # A command the floor and the gateway run under (live_instructions.py: callgrind), and
        # how long they may take to start.
        self.wrap: list[str] = []
        self.ready_timeout_s = 60.0

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
            *self.wrap,
            sys.executable,
            str(HERE / "bare_proxy.py"),
            "--port",
            str(port),
            "--upstream",
            self.mock.url,
            "--workers",
            str(self.args.workers),
        ]
        return self.services.start(
            "floor", argv, port=port, cpus=self.args.sut_cpus, timeout_s=self.ready_timeout_s
        )

    def start_gateway(self, config: GatewayConfig) -> Service:
        assert self.mock is not None
        port = free_port()
        env = {
            "TOLLWAY_MOCK_URL": self.mock.url + "/v1",
            "TOLLWAY_LOADTEST_KEY": self.key,
            "TOLLWAY_LOADTEST_LOG": str(self.services.log_dir / f"requests-{port}.duckdb"),
        }
        if self.sink is not None:
            env["TOLLWAY_OTLP_URL"] = self.sink.url
        argv = [
            *self.wrap,
            sys.executable,
            "-m",
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
        service = self.services.start(
            "gateway",
            argv,
            port=port,
            cpus=self.args.sut_cpus,
            env=env,
            ready_path="/readyz",
            timeout_s=self.ready_timeout_s,
        )
        # The installed gateway's spool (`require_tollway` checked it is there).
        from tollway.logs.ingest import spool_dir
        from tollway.logs.spool import backlog

        spool = spool_dir(env["TOLLWAY_LOADTEST_LOG"])
        service.queued = lambda: backlog(spool)
        return service

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
        # Open-loop latency is measured with the CPUs kept awake, saturation as the machine is
        # (a busy CPU does not sleep; an idle one only slows the other's wake-ups).
        awake = cpus_awake(self.args.cpus_awake and mode == "rate")
        with awake as idle, CpuSampler(watched) as sampler:
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
            "idle_cpus": idle,
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
        # The fixed-rate run measures latency at a steady rate, not the aftermath of the
        # saturation run: what that run left queued (the gateway's request log ingests ~15k
        # records a second of saturation in the background) finishes first.
        settled_s = service.settle(SETTLE_QUIET_PCT, SETTLE_TIMEOUT_S)
        if settled_s > 2.0:
            print(f"    {report.LABELS[target]} settled {settled_s:.1f} s after saturation")
        rate_run = self.load(
            service, target, "rate", round_no, duration_s=args.duration, rate=args.rate
        )
        rate_run["settled_s"] = round(settled_s, 1)
        after = service.rss()
        if target != "direct":
            rate_run["rss_before"] = before.__dict__
            rate_run["rss_after"] = after.__dict__
            print(
                f"    RSS {service.name}: largest worker {before.max_process_mb:.0f} ->"
                f" {after.max_process_mb:.0f} MB, tree {before.total_mb:.0f} ->"
                f" {after.total_mb:.0f} MB ({after.processes} processes)"
                + (f"; log ingester {after.helper_mb:.0f} MB" if after.helper_mb else "")
            )
        if rate_run["result"]["rps"] < 0.95 * args.rate:
            print(
                f"    warning: {report.LABELS[target]} did not hold {args.rate:g} RPS"
                f" ({rate_run['result']['rps']:.0f})"
            )

    def comparison(
        self, config: GatewayConfig | None, without: GatewayConfig | None = None
    ) -> None:
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
            runs = [(config, "gateway"), (without, "without")]
            if round_no % 2 == 0:
                runs.reverse()  # with and without take turns going first: drift cancels out
            for cfg, target in runs:
                if cfg is not None:
                    gateway = self.start_gateway(cfg)
                    self.measure(gateway, target, round_no)
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


@contextlib.contextmanager
def one_cpu(
    base: Path, without: list[str], stream: bool, log_dir: Path, rounds: int = 1
) -> Iterator[tuple[Harness, GatewayConfig]]:
    """The measurement scripts' set-up (cpu_cost.py, live_instructions.py): the floor and the
    gateway get CPU 0 and one worker, the mock (and the OTLP sink when `base` exports traces)
    and oha CPU 1. Yields the harness and the config without the features named in `without`."""
    args = SimpleNamespace(
        stream=stream,
        mock_workers=2,
        load_cpus="1",
        sut_cpus="0",
        workers=1,
        rounds=rounds,
        cpus_awake=False,
    )
    path = find_oha(install=False)
    oha = Oha(path, OhaFlags.detect(path), "1", oha_threads("1"))
    log_dir.mkdir(parents=True, exist_ok=True)
    with Services(log_dir) as services:
        config = resolve(base, without, log_dir)
        key = secrets.token_urlsafe(16)
        h = Harness(args, services, oha, key, model=config.model or MODEL)  # type: ignore[arg-type]
        h.start_mock()
        if config.needs_otlp_sink:
            h.start_sink()
        yield h, config
