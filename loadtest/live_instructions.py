#!/usr/bin/env python3
"""Instructions per request of the floor and of Tollway as served, counted by callgrind in the
Granian worker while oha sends real requests through it to the mock upstream:
`python loadtest/live_instructions.py [--config loadtest/gateway.yaml] [--stream]`.

`loadtest/instructions.py` counts the gateway's own request path in process; this counts the
whole worker (Granian, uvloop, aiohttp, the gateway, telemetry's background work) for the
floor and for the gateway, set up as `loadtest/run` sets them up. On one CPU the ratio of the
two counts tracks the throughput ratio `loadtest/run` measures for non-streamed requests (the
kernel's share, not counted here, is the same on both sides and pulls a stream's real ratio
up), and it does not move when other programs share the machine. Under callgrind both servers
run ~50x slower, so the load is light (8 connections); each side takes ~1 minute.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.features import GatewayConfig
from harness.procs import Service
from harness.runner import Harness, one_cpu

HERE = Path(__file__).resolve().parent
WARM_UP = 300
CONCURRENCY = 8
INGESTER = "tollway.logs.ingest"


def callgrind(out_dir: Path) -> list[str]:
    # Granian starts its workers as new processes: follow them, one output file each.
    return ["valgrind", "--tool=callgrind", "--trace-children=yes",
            f"--callgrind-out-file={out_dir}/cg.%p"]  # fmt: skip


def control(flag: str, service: Service) -> None:
    """`callgrind_control` on every process of the service (-z zeroes, -d dumps)."""
    for proc in service.tree():
        subprocess.run(["callgrind_control", flag, str(proc.pid)], capture_output=True, check=False)


def dumps(out_dir: Path) -> list[tuple[int, str]]:
    """(instructions, command) of each process's first dump, the largest first."""
    out = []
    for dump in out_dir.glob("cg.*.1"):
        text = dump.read_text(errors="replace")
        total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        cmd = re.search(r"^cmd: *(.*)$", text, re.M)
        out.append((int(total.group(1)) if total else 0, cmd.group(1) if cmd else "?"))
    return sorted(out, reverse=True)


def count(h: Harness, gateway: GatewayConfig | None, requests: int) -> float:
    """Instructions per request in the worker of the gateway, or of the floor (None)."""
    with tempfile.TemporaryDirectory(prefix="live-cg-") as d:
        out_dir = Path(d)
        h.wrap = callgrind(out_dir)
        service = h.start_floor() if gateway is None else h.start_gateway(gateway)
        try:
            url = service.url + "/v1/chat/completions"
            h.oha.run(url, h.body, h.headers, concurrency=CONCURRENCY, requests=WARM_UP)
            time.sleep(1.0)  # telemetry's first fold and export of the warm-up
            control("-z", service)
            result = h.oha.run(url, h.body, h.headers, concurrency=CONCURRENCY, requests=requests)
            time.sleep(2.0)  # the background work of the last requests
            control("-d", service)
            time.sleep(1.0)
        finally:
            h.services.stop(service)
            h.wrap = []
        if result.failed:
            name = service.name
            raise SystemExit(f"{name}: {result.failed} failed requests {result.statuses}")
        counts = dumps(out_dir)
    # The request log's ingester is a process of its own (nice 19, off the worker's CPU
    # budget; under callgrind it is still importing during the count): not counted.
    return max((n for n, cmd in counts if INGESTER not in cmd), default=0) / requests


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=HERE / "gateway.yaml")
    p.add_argument("--stream", action="store_true", help="the load test's 25-chunk stream")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument(
        "--without", action="append", default=[], metavar="FEATURE",
        help="leave a feature out (as loadtest/run --no-FEATURE): otel, limits, routing, ...",
    )  # fmt: skip
    a = p.parse_args()
    log_dir = HERE / "results" / "live-instructions-logs"
    with one_cpu(a.config, a.without, a.stream, log_dir) as (h, config):
        h.ready_timeout_s = 300.0  # Python's start-up under callgrind
        floor = count(h, None, a.requests)
        gateway = count(h, config, a.requests)
    what = f"{a.config.name}{', stream' if a.stream else ''}"
    print(f"floor   {floor:10,.0f} instructions per request in the worker ({what})")
    print(f"gateway {gateway:10,.0f} instructions per request in the worker")
    print(f"gateway - floor {gateway - floor:,.0f}; floor / gateway {floor / gateway:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
