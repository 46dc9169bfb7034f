"""The stream meter from Python: the cost per streamed response of metering (and, for
Anthropic, translating) a 25-event stream fed one event per chunk, as the network delivers it.

Run: pytest benchmarks/test_bench_meter.py --benchmark-enable
"""

from __future__ import annotations

import msgspec
from pytest_benchmark.fixture import BenchmarkFixture

from tollway._core import SseMeter
from tollway.mock.content import Answers

EVENTS = 25


def openai_stream() -> list[bytes]:
    """Role chunk, 21 content tokens, finish chunk, usage chunk, [DONE]: 25 events."""
    head = (
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
        b'"model":"gpt-4o-mini","choices":['
    )
    tail = b',"usage":null}\n\n'
    answers = Answers(EVENTS - 4)
    events = [
        head + b'{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]' + tail
    ]
    events += [head + d.removesuffix(b"\n\n") for d in answers.openai_deltas]
    events[1:] = [e.removesuffix(b"}") + tail if e.endswith(b"]}") else e for e in events[1:]]
    events.append(head + b'{"index":0,"delta":{},"finish_reason":"stop"}]' + tail)
    usage = {"prompt_tokens": 30, "completion_tokens": EVENTS - 4, "total_tokens": 51}
    events.append(head + b"]," + b'"usage":' + msgspec.json.encode(usage) + b"}\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def anthropic_stream() -> list[bytes]:
    """message_start, block start, ping, 19 text deltas, block stop, message_delta,
    message_stop: 25 events, as the mock (and Anthropic) send them."""
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "model": "claude",
            "usage": {"input_tokens": 30, "output_tokens": 1},
        },
    }
    events = [
        b"event: message_start\ndata: " + msgspec.json.encode(start) + b"\n\n",
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n',
        b'event: ping\ndata: {"type":"ping"}\n\n',
    ]
    events += Answers(EVENTS - 6).anthropic_deltas
    events += [
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"output_tokens":19}}\n\n',
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ]
    return events


def _meter_stream(fmt: str, events: list[bytes], strip_usage: bool) -> SseMeter:
    meter = SseMeter(fmt, "gpt-4o-mini", 0.0, strip_usage=strip_usage)
    feed = meter.feed
    for i, event in enumerate(events):
        feed(event, float(i))
    meter.finish(25.0)
    return meter


def test_openai_stream_25_events(benchmark: BenchmarkFixture) -> None:
    events = openai_stream()
    assert len(events) == EVENTS
    meter = benchmark(_meter_stream, "openai", events, True)
    assert meter.done and meter.error is None and meter.output_tokens == EVENTS - 4


def test_anthropic_stream_25_events(benchmark: BenchmarkFixture) -> None:
    events = anthropic_stream()
    assert len(events) == EVENTS
    meter = benchmark(_meter_stream, "anthropic", events, False)
    assert meter.done and meter.error is None and meter.output_tokens == EVENTS - 6


def test_relay_baseline_25_events(benchmark: BenchmarkFixture) -> None:
    """The floor: the same Python loop handing each chunk on untouched."""

    def relay(events: list[bytes]) -> int:
        n = 0
        for event in events:
            n += len(event)
        return n

    benchmark(relay, openai_stream())
