"""Find (or install) oha, learn the flags of the installed version, run it and parse its JSON."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .procs import HarnessError, cpu_ids, pinned

CARGO_OHA = Path.home() / ".cargo" / "bin" / "oha"


def find_oha(install: bool) -> Path:
    found = shutil.which("oha")
    if found:
        return Path(found)
    if CARGO_OHA.exists():
        return CARGO_OHA
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not install or not Path(cargo).exists():
        raise HarnessError(
            "oha not found on PATH or in ~/.cargo/bin; install it with `cargo install oha --locked`"
        )
    print("oha not found: running `cargo install oha --locked` (about 8 minutes on 2 cores)...")
    subprocess.run([cargo, "install", "oha", "--locked"], check=True)
    if not CARGO_OHA.exists():
        raise HarnessError("cargo install oha finished but ~/.cargo/bin/oha is missing")
    return CARGO_OHA


@dataclass(frozen=True)
class OhaFlags:
    """Flags that moved between oha releases, resolved from `oha --help` of the installed one."""

    version: str
    json: tuple[str, ...]
    extra: tuple[str, ...]  # always passed: no TUI, per-status percentiles
    worker_threads: bool

    @classmethod
    def detect(cls, oha: Path) -> OhaFlags:
        text = subprocess.run([oha, "--help"], capture_output=True, text=True, check=True).stdout
        version = subprocess.run(
            [oha, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if "--output-format" in text:
            json_flags: tuple[str, ...] = ("--output-format", "json")
        elif "--json" in text:
            json_flags = ("--json",)
        else:
            raise HarnessError(f"{oha} ({version}) has no JSON output flag; upgrade oha")
        extra = tuple(f for f in ("--no-tui", "--stats-success-breakdown") if f in text)
        return cls(version, json_flags, extra, "--worker-threads" in text)


@dataclass(frozen=True)
class LoadResult:
    rps: float  # successful (2xx) responses per second
    attempted_rps: float
    p50_ms: float
    p99_ms: float
    ttfb_p50_ms: float
    ok: int
    failed: int
    statuses: dict[str, int]
    errors: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "rps": round(self.rps, 1),
            "attempted_rps": round(self.attempted_rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "ttfb_p50_ms": round(self.ttfb_p50_ms, 3),
            "ok": self.ok,
            "failed": self.failed,
            "statuses": self.statuses,
            "errors": self.errors,
        }


@dataclass(frozen=True)
class Oha:
    path: Path
    flags: OhaFlags
    cpus: str | None
    threads: int

    def run(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        *,
        concurrency: int,
        duration_s: float | None = None,
        requests: int | None = None,
        rate: float | None = None,
    ) -> LoadResult:
        argv: list[str] = [str(self.path), *self.flags.json, *self.flags.extra]
        argv += ["-c", str(concurrency), "-m", "POST", "-d", body.decode()]
        if duration_s is not None:
            argv += ["-z", f"{int(duration_s * 1000)}ms"]
        else:
            argv += ["-n", str(requests)]
        if rate is not None:
            # Open loop: evenly spaced arrivals, latency measured from the scheduled send time.
            argv += ["-q", str(rate), "--latency-correction"]
        if self.flags.worker_threads:
            argv += ["--worker-threads", str(self.threads)]
        for name, value in headers.items():
            argv += ["-H", f"{name}: {value}"]
        argv.append(url)
        proc = subprocess.Popen(
            pinned(argv, self.cpus),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate()
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        if proc.returncode != 0:
            raise HarnessError(f"oha failed ({proc.returncode}): {err.decode(errors='replace')}")
        return parse(json.loads(out))


def _percentile_ms(table: dict[str, float] | None, key: str) -> float:
    value = (table or {}).get(key)
    return float("nan") if value is None else value * 1000.0


def parse(doc: dict[str, object]) -> LoadResult:
    summary = doc["summary"]
    assert isinstance(summary, dict)
    statuses = {str(k): int(v) for k, v in dict(doc.get("statusCodeDistribution") or {}).items()}
    # "aborted due to deadline" is oha cutting in-flight requests at -z, not a server failure.
    errors = {str(k): int(v) for k, v in dict(doc.get("errorDistribution") or {}).items()}
    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    failed = sum(statuses.values()) - ok + sum(v for k, v in errors.items() if "deadline" not in k)
    total_s = float(summary.get("total") or 0.0) or float("nan")
    # Percentiles of successful requests only, when oha gives them: fast 4xx would flatter.
    latency = doc.get("latencyPercentilesSuccessful") or doc.get("latencyPercentiles")
    ttfb = doc.get("firstBytePercentiles")
    assert isinstance(latency, dict)
    return LoadResult(
        rps=ok / total_s,
        attempted_rps=float(summary.get("requestsPerSec") or 0.0),
        p50_ms=_percentile_ms(latency, "p50"),
        p99_ms=_percentile_ms(latency, "p99"),
        ttfb_p50_ms=_percentile_ms(ttfb if isinstance(ttfb, dict) else None, "p50"),
        ok=ok,
        failed=failed,
        statuses=statuses,
        errors=errors,
    )


def oha_threads(cpus: str | None) -> int:
    """One tokio thread per CPU oha is pinned to (its default counts every physical core)."""
    return max(len(cpu_ids(cpus)), 1) if cpus else os.cpu_count() or 1
