#!/usr/bin/env python3
"""Instructions per request of the gateway's request path, in process, counted by callgrind:
`python loadtest/instructions.py [--config loadtest/gateway.yaml] [--stream]`.

The load test's request goes through the whole ASGI app (validate, admit, guardrails, the call,
the answer, settle, the telemetry record) with an upstream stub that answers at once;
`--background` counts what telemetry does later with the records (fold, span encoding, the
request log's bytes): the request path with it, less the request path alone. A count is the
difference between two runs of different lengths, so start-up cancels out. It is the
same from run to run (within ~0.5%), where CPU time on a shared machine moves by 10-20%: use
it to compare two versions of the code; `loadtest/run` gives the figures that count. Needs
valgrind (`apt-get install valgrind`); each count takes ~1 minute.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BATCH = 100


def serve(config: str, requests: int, stream: bool, background: bool) -> None:
    """The measured program: `requests` requests through the app (or their telemetry)."""
    sys.path.insert(0, str(HERE.parent / "benchmarks"))
    import msgspec
    import test_bench_request_path as bench
    import uvloop

    from tollway.app import _settle_heap, create_app
    from tollway.proxy import Proxy

    os.environ.update(
        TOLLWAY_MOCK_URL="http://127.0.0.1:9/v1",
        TOLLWAY_LOADTEST_KEY=bench.KEY,
        TOLLWAY_OTLP_URL="http://127.0.0.1:9",
        TOLLWAY_LOADTEST_LOG=str(Path(tempfile.mkdtemp()) / "requests.duckdb"),
        TOLLWAY_LOG_LEVEL="WARNING",
    )
    app = create_app(config)
    telemetry = app.telemetry
    assert telemetry is not None
    app.proxy = Proxy(app.runtime, bench.StubClient(), telemetry, None)
    scope, raw = bench.request(stream)
    body: dict[str, Any] = msgspec.json.decode(raw)
    body["model"] = "loadtest-chat"  # the load test's virtual model (routing rules match it)
    raw = msgspec.json.encode(body)
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
    scope["headers"] = [*headers, (b"content-length", str(len(raw)).encode())]
    bench.BATCH = BATCH
    loop = uvloop.new_event_loop()
    telemetry._cap = 1 << 30
    encoder = telemetry._encoder

    def run() -> None:
        loop.run_until_complete(bench.serve_batch(app, scope, raw))
        if background:
            loop.run_until_complete(telemetry._intake())
            while encoder is not None and len(encoder):
                encoder.encode_next(telemetry.settings.batch_size)
        else:
            telemetry._buf.take(len(telemetry._buf), False)

    run()
    _settle_heap()
    for _ in range(requests // BATCH):
        run()


def count(args: argparse.Namespace, requests: int, background: bool = False) -> int:
    cmd = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, __file__, "--serve", str(requests), "--config", str(args.config),
    ]  # fmt: skip
    cmd += ["--stream"] * args.stream + ["--background"] * background
    # A fixed hash seed: string hashes (dict and set layouts) the same in every run.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stderr
    m = re.search(r"Collected : (\d+)", out)
    if m is None:
        raise SystemExit(f"no count from valgrind:\n{out[-2000:]}")
    return int(m.group(1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=HERE / "gateway.yaml")
    p.add_argument("--stream", action="store_true", help="the load test's 25-chunk stream")
    p.add_argument("--background", action="store_true", help="telemetry's later work instead")
    p.add_argument("--requests", type=int, default=1000, help="the difference between the runs")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve is not None:
        serve(str(a.config), a.serve, a.stream, a.background)
        return 0
    short, long = BATCH * 2, BATCH * 2 + a.requests
    per = (count(a, long) - count(a, short)) / a.requests
    if a.background:
        per = (count(a, long, True) - count(a, short, True)) / a.requests - per
    what = "telemetry background" if a.background else "request path"
    print(f"{per:,.0f} instructions per request ({what}, {a.config.name}"
          f"{', stream' if a.stream else ''})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
