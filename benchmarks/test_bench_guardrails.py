"""Guardrail scanning in Rust: a 4 KB prompt through every built-in kind (target: 50 µs).

Run: pytest benchmarks/test_bench_guardrails.py --benchmark-enable
"""

from __future__ import annotations

import msgspec
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from tollway.engine import Engine
from tollway.guardrails import Guardrails

CONFIG = {
    "type": "gateway-guardrails-config",
    "guardrails": [
        {"name": "pii", "kind": "pii", "operation": "mutate"},
        {"name": "secrets", "kind": "secrets", "operation": "mutate"},
        {"name": "injection", "kind": "prompt-injection"},
        {
            "name": "tickets",
            "kind": "regex",
            "operation": "mutate",
            "patterns": [{"name": "TICKET_ID", "pattern": "TCK-[0-9]{6}"}],
        },
    ],
}

# Engineering prose with a few things to find, as a user would paste it.
PARAGRAPH = (
    "We deployed the ingestion service to eu-west-1 yesterday and the p99 latency went from "
    "180 ms to 240 ms after the rollout; the dashboards show the regression starts at 14:05. "
    "Could you look at the retry policy in the client (max 3 attempts, 100 ms backoff) and "
    "tell me whether the connection pool size of 64 is enough for 2,000 requests per second? "
    "The config lives in services/ingest/config.yaml and the owner is on the platform team. "
)
FINDINGS = (
    "Contact jane.doe@example.com or +44 20 7946 0958 about ticket TCK-123456. "
    "The old key AKIAIOSFODNN7EXAMPLE was rotated. "
)


def prompt(size: int = 4096) -> str:
    text = FINDINGS
    while len(text) < size:
        text += PARAGRAPH
    return text[:size]


@pytest.fixture(scope="module")
def guardrails() -> Guardrails:
    return Engine(msgspec.json.encode([{"source": "bench", "doc": CONFIG}])).guardrails


def all_ids(g: Guardrails) -> list[int]:
    return [i for i in (g.id(n) for n in g.names) if i is not None]


def test_scan_4k_prompt_all_builtins(benchmark: BenchmarkFixture, guardrails: Guardrails) -> None:
    text = prompt()
    found = benchmark(guardrails.scan, all_ids(guardrails), text)
    assert {f.category for f in found} == {"EMAIL", "PHONE", "TICKET_ID", "AWS_ACCESS_KEY"}


def test_scan_4k_clean_prompt_all_builtins(
    benchmark: BenchmarkFixture, guardrails: Guardrails
) -> None:
    text = (PARAGRAPH * 20)[:4096]
    assert benchmark(guardrails.scan, all_ids(guardrails), text) == []


def test_redact_4k_prompt(benchmark: BenchmarkFixture, guardrails: Guardrails) -> None:
    text = prompt()
    redacted, _ = benchmark(guardrails.redact, all_ids(guardrails), text)
    assert "jane.doe" not in redacted


def test_stream_redact_4k_answer_in_16_byte_deltas(
    benchmark: BenchmarkFixture, guardrails: Guardrails
) -> None:
    text = prompt()
    ids = all_ids(guardrails)
    deltas = [text[i : i + 16] for i in range(0, len(text), 16)]

    def stream() -> str:
        r = guardrails.stream_redactor(ids)
        return "".join(r.feed(d) for d in deltas) + r.finish()

    assert benchmark(stream) == guardrails.redact(ids, text)[0]
