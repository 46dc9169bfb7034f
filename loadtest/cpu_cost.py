#!/usr/bin/env python3
"""CPU time per request of the floor (bare Granian + aiohttp) and of Tollway, for the same
requests: `python loadtest/cpu_cost.py [--config loadtest/gateway.yaml] [--requests 20000]`.

On one CPU a server's saturation throughput is the inverse of its CPU time per request, so
floor_us / gateway_us estimates the `loadtest/run` ratio. CPU time (user + system of the
whole process tree, from /proc) barely moves when other programs share the machine, which
wall-clock RPS does: use this to compare changes on a busy machine, and `loadtest/run` on a
quiet one for the figures that count.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.procs import Service
from harness.runner import Harness, one_cpu

HERE = Path(__file__).resolve().parent


def cpu_by_process(service: Service) -> dict[str, float]:
    """CPU seconds of each process of the tree, by pid and command."""
    out: dict[str, float] = {}
    for proc in service.tree():
        try:
            t = proc.cpu_times()
            name = f"{proc.pid} {' '.join(proc.cmdline()[1:4])}"[:60]
        except psutil.Error:
            continue
        out[name] = t.user + t.system
    return out


def cpu_s(service: Service) -> float:
    return sum(cpu_by_process(service).values())


def busiest(service: Service) -> int:
    """The pid of the process of the tree that has used the most CPU (the worker)."""
    best, pid = -1.0, 0
    for proc in service.tree():
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        if t.user + t.system > best:
            best, pid = t.user + t.system, proc.pid
    return pid


def cost_us(
    h: Harness,
    service: Service,
    requests: int,
    concurrency: int,
    profile: Path | None = None,
    verbose: bool = False,
) -> float:
    h.oha.run(
        service.url + "/v1/chat/completions",
        h.body,
        h.headers,
        concurrency=concurrency,
        requests=min(2000, requests),
    )  # warm up: pools, tokenizer tables, JIT-free caches
    before = cpu_by_process(service)
    spy = None
    if profile is not None:
        # Collapsed stacks of the worker (Python and native frames) while the measured load runs.
        pid = str(busiest(service))
        cmd = ["py-spy", "record", "--gil", "--nonblocking", "-r", "500", "-f", "raw",
               "-o", str(profile), "-p", pid]  # fmt: skip
        if profile.suffix == ".data":  # perf: on-CPU samples of every native frame
            cmd = ["perf", "record", "-F", "999", "-g", "-o", str(profile), "-p", pid]
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = h.oha.run(
        service.url + "/v1/chat/completions",
        h.body,
        h.headers,
        concurrency=concurrency,
        requests=requests,
    )
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    if result.failed:
        raise SystemExit(f"{service.name}: {result.failed} failed requests {result.statuses}")
    after = cpu_by_process(service)
    if service.name != "floor" or verbose:
        for name, cpu in after.items():
            share = (cpu - before.get(name, 0.0)) / requests * 1e6
            print(f"    {service.name}: {share:8.1f} us  {name}")
    return (sum(after.values()) - sum(before.values())) / requests * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=HERE / "gateway.yaml")
    p.add_argument("--requests", type=int, default=20000)
    # The load test's saturation run uses 32: at 16 the floor reads a stream event by event
    # and costs ~30% more CPU per stream, which flatters the gateway's ratio.
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--no-otel", action="store_true")
    p.add_argument(
        "--profile", type=Path, metavar="FILE",
        help="py-spy the gateway's worker during its measured run (collapsed stacks to FILE; "
        "with FILE.data, `perf record` instead)",
    )  # fmt: skip
    p.add_argument(
        "--without", action="append", default=[], metavar="FEATURE",
        help="leave a feature out (as loadtest/run --no-FEATURE): otel, limits, routing, ...",
    )  # fmt: skip
    a = p.parse_args()
    log_dir = HERE / "results" / "cpu-cost-logs"
    without = (["otel"] if a.no_otel else []) + a.without
    with one_cpu(a.config, without, a.stream, log_dir, a.rounds) as (h, config):
        services = h.services
        floor, gateway = [], []
        for _ in range(a.rounds):
            svc = h.start_floor()
            floor_profile = None
            if a.profile is not None:
                floor_profile = a.profile.with_name("floor-" + a.profile.name)
            floor.append(cost_us(h, svc, a.requests, a.concurrency, floor_profile))
            services.stop(svc)
            svc = h.start_gateway(config)
            gateway.append(cost_us(h, svc, a.requests, a.concurrency, a.profile))
            services.stop(svc)
    f, g = sorted(floor)[len(floor) // 2], sorted(gateway)[len(gateway) // 2]
    print(f"floor   {f:8.1f} us CPU per request  (rounds: {', '.join(f'{x:.1f}' for x in floor)})")
    print(
        f"gateway {g:8.1f} us CPU per request  (rounds: {', '.join(f'{x:.1f}' for x in gateway)})"
    )
    print(f"estimated gateway / floor throughput on one CPU: {f / g:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
