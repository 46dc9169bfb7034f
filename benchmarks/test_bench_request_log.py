"""The request log's analytics queries on a filled embedded store (20k rows here; the 1M-row
figures come from `python benchmarks/request_log_queries.py --rows 1000000`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from request_log_queries import QUERIES, fill, run_query

from tollway.logs.store import EmbeddedStore


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedStore:
    s = EmbeddedStore(str(tmp_path_factory.mktemp("log") / "bench.duckdb"))
    fill(s, 20_000, int(time.time() * 1e6))
    return s


@pytest.mark.parametrize(("label", "kind", "params"), QUERIES, ids=[q[0] for q in QUERIES])
def test_query(benchmark: Any, store: EmbeddedStore, label: str, kind: str,
               params: dict[str, str]) -> None:  # fmt: skip
    rows = benchmark(run_query, store, kind, params, time.time())
    assert rows > 0, label


def test_fill_size(store: EmbeddedStore) -> None:
    assert Path(store.path).stat().st_size > 0
