"""The load-test harness's hold on the machine: what it asks of the kernel, and that it lets go.

`loadtest/run` measures added latency at a fixed rate with the CPUs kept out of their sleep
states, and keeps its own process off the system under test's CPUs. Both act on the real
kernel here, and are read back from it.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "loadtest"))

from harness.procs import CPU_DMA_LATENCY, Service, cpus_awake, keep_off_sut


def _kernel_latency_us() -> int:
    # Reading the device gives the kernel's current aggregate PM QoS target, in microseconds.
    fd = os.open(CPU_DMA_LATENCY, os.O_RDONLY)
    try:
        (value,) = struct.unpack("i", os.read(fd, 4))
        return int(value)
    finally:
        os.close(fd)


def _can_hold() -> bool:
    return os.access(CPU_DMA_LATENCY, os.R_OK | os.W_OK)


@pytest.mark.skipif(not _can_hold(), reason=f"{CPU_DMA_LATENCY} is not writable here")
def test_cpus_awake_holds_zero_latency_and_lets_go() -> None:
    before = _kernel_latency_us()
    with cpus_awake(True) as said:
        assert _kernel_latency_us() == 0
        assert "held at 0 us" in said
    assert _kernel_latency_us() == before


def test_cpus_awake_off_leaves_the_machine_as_it_is() -> None:
    before = _kernel_latency_us() if _can_hold() else None
    with cpus_awake(False) as said:
        assert said.startswith("as the machine is")
        if before is not None:
            assert _kernel_latency_us() == before


def test_cpus_awake_says_why_when_it_cannot_hold(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("harness.procs.CPU_DMA_LATENCY", tmp_path / "missing" / "device")
    with cpus_awake(True) as said:
        assert said.startswith("as the machine is")
        assert "No such file" in said


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_harness_keeps_off_the_sut_cpus() -> None:
    allowed = os.sched_getaffinity(0)
    sut, load = sorted(allowed)[0], sorted(allowed)[1]
    try:
        keep_off_sut(str(load))
        assert os.sched_getaffinity(0) == {load}
        assert sut not in os.sched_getaffinity(0)
        # A CPU the process may not use is left alone rather than failing the run.
        keep_off_sut("4096")
        assert os.sched_getaffinity(0) == {load}
    finally:
        os.sched_setaffinity(0, allowed)


def _service(tmp_path: Path, code: str) -> Service:
    proc = subprocess.Popen([sys.executable, "-c", code])
    return Service("sut", proc, 0, tmp_path / "sut.log")


def test_settle_waits_for_queued_work_then_quiet(tmp_path: Path) -> None:
    service = _service(tmp_path, "import time; time.sleep(30)")
    left = [3]

    def queued() -> int:
        left[0] = max(left[0] - 1, 0)
        return left[0]

    service.queued = queued
    try:
        waited = service.settle(quiet_pct=50.0, timeout_s=10.0, step_s=0.05)
        assert left[0] == 0  # it asked until the queue was empty
        assert waited < 10.0
    finally:
        service.proc.kill()
        service.proc.wait()


def test_settle_gives_up_on_a_busy_service(tmp_path: Path) -> None:
    service = _service(tmp_path, "while True: pass")
    try:
        waited = service.settle(quiet_pct=3.0, timeout_s=0.6, step_s=0.1)
        assert waited >= 0.6
    finally:
        service.proc.kill()
        service.proc.wait()
