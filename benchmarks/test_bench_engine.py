"""The Rust hot path from Python: one `admit` per request, and config compile.

Run: pytest benchmarks/test_bench_engine.py --benchmark-enable
"""

from __future__ import annotations

import msgspec
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from tollway._core import Admission, Denial, Engine

METADATA = (
    b'{"project_id": "proj-1234", "env": "prod", "team": "search", '
    b'"feature": "autocomplete", "tenant": "acme", "region": "eu-west-1"}'
)


def documents(accounts: int = 20, models: int = 5, keys: int = 50) -> bytes:
    docs: list[dict[str, object]] = [
        {
            "source": f"bench#{a}",
            "doc": {
                "type": "provider-account",
                "name": f"acct{a}",
                "provider": "openai-compatible",
                "base_url": f"http://127.0.0.1:{9000 + a}/v1",
                "api_key": f"sk-{a}",
                "models": [f"model-{m}" for m in range(models)],
            },
        }
        for a in range(accounts)
    ]
    docs.append(
        {
            "source": "bench-keys",
            "doc": {
                "type": "gateway-keys",
                "keys": [
                    {
                        "name": f"key{k}",
                        "key": f"bench-key-{k:04d}",
                        "subject": f"user:u{k}",
                        "allowed_models": ["acct1*/*", "acct2/*"] if k % 2 else ["*"],
                        "metadata": {"team": "bench"},
                    }
                    for k in range(keys)
                ],
            },
        }
    )
    return msgspec.json.encode(docs)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(documents())


def test_admit_with_metadata(benchmark: BenchmarkFixture, engine: Engine) -> None:
    result = benchmark(engine.admit, b"Bearer bench-key-0010", "acct7/model-3", METADATA)
    assert isinstance(result, Admission)


def test_admit_without_metadata(benchmark: BenchmarkFixture, engine: Engine) -> None:
    result = benchmark(engine.admit, b"Bearer bench-key-0010", "acct7/model-3", None)
    assert isinstance(result, Admission)


def test_admit_denied_unknown_key(benchmark: BenchmarkFixture, engine: Engine) -> None:
    result = benchmark(engine.admit, b"Bearer nope-nope-nope", "acct7/model-3", None)
    assert isinstance(result, Denial) and result.status == 401


def test_admit_denied_bad_metadata(benchmark: BenchmarkFixture, engine: Engine) -> None:
    result = benchmark(engine.admit, b"Bearer bench-key-0010", "acct7/model-3", b'{"a": 1}')
    assert isinstance(result, Denial) and result.status == 400


def test_compile_config(benchmark: BenchmarkFixture) -> None:
    docs = documents()
    engine = benchmark(Engine, docs)
    assert len(engine.targets) == 100


def routed_documents(limited: bool) -> bytes:
    """20 routing rules of 5 targets each, matched on metadata, as issue 4 asks; optionally a
    rate limit keyed per metadata.project_id (issue 6: the cost of a limited admit)."""
    docs = msgspec.json.decode(documents())
    rules = [
        {
            "id": f"rule-{r}",
            "type": "weight-based-routing",
            "when": {"models": [f"virtual-{r % 4}"], "metadata": {"feature": f"f{r}"}},
            "load_balance_targets": [
                {"target": f"acct{(r + t) % 20}/model-{t}", "weight": 20} for t in range(5)
            ],
        }
        for r in range(20)
    ]
    docs.append({"source": "lb", "doc": {"type": "gateway-load-balancing-config", "rules": rules}})
    if limited:
        limit = {
            "id": "per-project",
            "when": {},
            "limit_to": 10_000_000,
            "unit": "requests_per_minute",
            "rate_limit_applies_per": ["metadata.project_id"],
        }
        docs.append(
            {"source": "rl", "doc": {"type": "gateway-rate-limiting-config", "rules": [limit]}}
        )
    return msgspec.json.encode(docs)


# The last rule matches (worst case for first-match), with 6 metadata keys.
ROUTED_METADATA = (
    b'{"project_id": "proj-1234", "env": "prod", "team": "search", '
    b'"feature": "f19", "tenant": "acme", "region": "eu-west-1"}'
)


@pytest.mark.parametrize("limited", [False, True], ids=["unlimited", "rate-limited"])
def test_admit_and_settle_routed(benchmark: BenchmarkFixture, limited: bool) -> None:
    engine = Engine(routed_documents(limited))
    # The request path reads the Runtime's precomputed table, not Engine.plans (which builds
    # a Python object per plan on each access).
    targets = [p.target for p in engine.plans]

    def one_request() -> float:
        adm = engine.admit(b"Bearer bench-key-0000", "virtual-3", ROUTED_METADATA)
        assert isinstance(adm, Admission)
        target = targets[adm.plans[0]]
        return engine.settle(adm, [(target, 200, 120.0, 16)], (40, 0, 16))

    benchmark(one_request)
