"""The embedded log's spool, without a gateway: a worker's writer spools records, the ingester
turns them into rows and loads them once, also after a pass that was cut short."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tollway.logs.ingest import READY, RECORDS, Ingester
from tollway.logs.settings import LogSettings
from tollway.logs.spool import Spool
from tollway.logs.store import TABLE
from tollway.logs.writer import LogWriter
from tollway.telemetry.record import Attempt, LogPart, Record


def record(rid: str, *, logged: bool = True) -> Record:
    now = time.time_ns()
    attempt = Attempt(target="mock/small", provider="openai", request_model="small",
                      start_ns=now - 2_000_000, end_ns=now - 1_000_000, status=200)  # fmt: skip
    part = LogPart(enabled=logged, input_tokens=7, output_tokens=3, cost_usd=0.25)
    return Record(request_id=rid, start_ns=now - 3_000_000, end_ns=now, model="small",
                  key_name="k", subject="user:a", attempts=[attempt], log=part)  # fmt: skip


def logged(path: Path) -> list[tuple[str, int, int, float, str]]:
    ing = Ingester(str(path), 30, 7)
    _, rows = ing.store.query(
        f"SELECT request_id, input_tokens, output_tokens, cost, target FROM {TABLE} "  # noqa: S608
        "ORDER BY request_id"
    )
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_spooled_records_become_rows_once(tmp_path: Path) -> None:
    path = tmp_path / "requests.duckdb"
    settings = LogSettings(path=str(path))
    spool = Spool(str(path), settings)
    writer = LogWriter(settings, [spool])
    writer.submit([record("r1"), record("r2"), record("r3", logged=False)])
    writer._write_batch()  # the writer thread's step, here in the test's thread
    assert writer.counts["written"] == 2 and writer.counts["excluded"] == 1
    files = list(spool.dir.iterdir())
    assert [f.suffix for f in files] == [RECORDS], files

    assert Ingester(str(path), 30, 7).load_all() > 0
    assert logged(path) == [("r1", 7, 3, 0.25, "mock/small"), ("r2", 7, 3, 0.25, "mock/small")]
    assert not any(f.suffix in (RECORDS, READY) for f in spool.dir.iterdir())


def test_a_pass_cut_after_converting_repeats_no_row(tmp_path: Path) -> None:
    path = tmp_path / "requests.duckdb"
    spool = Spool(str(path), LogSettings(path=str(path)))
    writer = LogWriter(LogSettings(path=str(path)), [spool])
    writer.submit([record("a1")])
    writer._write_batch()
    (rec,) = spool.dir.glob(f"*{RECORDS}")
    saved = rec.read_bytes()
    ing = Ingester(str(path), 30, 7)
    ing.convert(str(rec))
    # The ingester died after writing the row file and before deleting the record file.
    rec.write_bytes(saved)
    Ingester(str(path), 30, 7).load_all()
    assert [r[0] for r in logged(path)] == ["a1"]


def test_an_unreadable_record_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "requests.duckdb"
    spool = Spool(str(path), LogSettings(path=str(path)))
    spool.write(b'["torn", 1\n')
    writer = LogWriter(LogSettings(path=str(path)), [spool])
    writer.submit([record("ok")])
    writer._write_batch()
    Ingester(str(path), 30, 7).load_all()
    assert [r[0] for r in logged(path)] == ["ok"]
    assert [f.name.endswith(".bad") for f in spool.dir.glob("*.bad")] == [True]


def test_slices_encoded_by_intake_are_spooled_as_they_are(tmp_path: Path) -> None:
    """The writer joins the MessagePack slices it is handed (not re-encoding them); a slice
    with a record that may not be logged is encoded again without it."""
    import msgspec

    path = tmp_path / "requests.duckdb"
    spool = Spool(str(path), LogSettings(path=str(path)))
    writer = LogWriter(LogSettings(path=str(path)), [spool])
    first = [record(f"s{i:02d}") for i in range(20)]  # past a fixarray's 15 elements
    second = [record("t1"), record("t2", logged=False)]
    writer.submit(first, msgspec.msgpack.encode(first))
    writer.submit(second, msgspec.msgpack.encode(second))
    writer._write_batch()
    assert writer.counts["written"] == 21 and writer.counts["excluded"] == 1
    (rec,) = spool.dir.glob(f"*{RECORDS}")
    spooled = msgspec.msgpack.decode(rec.read_bytes(), type=list[Record])
    assert [r.request_id for r in spooled] == [r.request_id for r in first] + ["t1"]
    Ingester(str(path), 30, 7).load_all()
    assert [r[0] for r in logged(path)] == [r.request_id for r in first] + ["t1"]


def test_slices_the_core_writes_at_intake_are_spooled_as_they_are(tmp_path: Path) -> None:
    """Telemetry intake hands the writer each slice as the core wrote it (`RecordBuffer.take`):
    spooled without being decoded when every record may be logged, filtered when one may not,
    and the ingester reads the core's bytes into the same rows."""
    import msgspec

    from tollway.engine import RecordBuffer

    path = tmp_path / "requests.duckdb"
    spool = Spool(str(path), LogSettings(path=str(path)))
    writer = LogWriter(LogSettings(path=str(path)), [spool])
    buf = RecordBuffer()
    first = [record(f"c{i:02d}") for i in range(20)]
    # Records made in Python (MCP requests) keep every field, bodies included.
    assert first[0].log is not None
    first[0].log.request_body, first[0].log.response_body = '{"q": "é"}', "answer"
    for r in [*first, record("d1"), record("d2", logged=False)]:
        buf.push_encoded(msgspec.msgpack.encode(r))
    whole, mixed = buf.take(20, True), buf.take(5, True)
    assert (len(whole), whole.logged(), len(mixed), mixed.logged()) == (20, 20, 2, 1)
    assert len(buf) == 0 and buf.take(5, False).encoded() is None
    whole_bytes, mixed_bytes = whole.encoded(), mixed.encoded()
    assert whole_bytes is not None and mixed_bytes is not None
    assert msgspec.msgpack.decode(whole_bytes, type=list[Record]) == first
    writer.submit_encoded(whole_bytes, len(whole), whole.logged())
    writer.submit_encoded(mixed_bytes, len(mixed), mixed.logged())
    writer._write_batch()
    assert writer.counts["written"] == 21 and writer.counts["excluded"] == 1
    (rec,) = spool.dir.glob(f"*{RECORDS}")
    assert whole_bytes[3:] in rec.read_bytes(), "the records' bytes as the core wrote them"
    Ingester(str(path), 30, 7).load_all()
    assert [r[0] for r in logged(path)] == [r.request_id for r in first] + ["d1"]


def test_a_record_file_of_an_older_worker_still_loads(tmp_path: Path) -> None:
    """Record files written as newline-delimited JSON (before the spool took MessagePack)."""
    import msgspec

    path = tmp_path / "requests.duckdb"
    spool = Spool(str(path), LogSettings(path=str(path)))
    spool.write(msgspec.json.Encoder().encode_lines([record("old1"), record("old2")]))
    Ingester(str(path), 30, 7).load_all()
    assert [r[0] for r in logged(path)] == ["old1", "old2"]


def test_the_ingester_yields_its_cpu_to_the_workers(tmp_path: Path) -> None:
    """A pass never holds up a request: the ingester runs under the idle policy (a waking
    worker preempts it at once) and at nice 19 where that policy is missing."""
    path = tmp_path / "requests.duckdb"
    spool = Spool(str(path), LogSettings(path=str(path)))
    spool.ensure_running()
    child = spool._child
    assert child is not None
    try:
        deadline = time.monotonic() + 30
        while os.sched_getscheduler(child.pid) != os.SCHED_IDLE:
            assert child.poll() is None, "the ingester exited"
            assert time.monotonic() < deadline, "the ingester never took the idle policy"
            time.sleep(0.05)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 19
    finally:
        spool.close(10)
    assert child.returncode == 0
