"""Shared fixtures for the pytest-benchmark suites: typical request bodies and machine details."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

SYSTEM = "You are a concise assistant for the engineering team. Answer in plain English."


def chat_request(turns: int, stream: bool = False) -> dict[str, Any]:
    """An OpenAI chat request: a system prompt and `turns` user/assistant exchanges."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i}: how do I rotate a key? " * 4})
        messages.append({"role": "assistant", "content": f"Answer {i}: use hash-key, then " * 6})
    messages.append({"role": "user", "content": "Summarise the steps in one sentence."})
    body: dict[str, Any] = {
        "model": "prod/engineering-assistant",
        "messages": messages,
        "temperature": 0.2,
        "max_tokens": 256,
        "user": "user:42",
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def chat_response(tokens: int = 25) -> dict[str, Any]:
    return {
        "id": "chatcmpl-0123456789abcdef",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "tok " * tokens},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 42, "completion_tokens": tokens, "total_tokens": 42 + tokens},
    }


@pytest.fixture(scope="session")
def small_chat() -> dict[str, Any]:
    """About 0.3 KB: a system prompt and one question, the common case."""
    return chat_request(turns=0)


@pytest.fixture(scope="session")
def long_chat() -> dict[str, Any]:
    """About 16 KB: a 40-turn conversation, a common worst case."""
    return chat_request(turns=40)


@pytest.fixture(scope="session")
def completion() -> dict[str, Any]:
    return chat_response()


def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    # Saved baselines say where they were measured: comparing across machines means little.
    machine_info["nproc"] = os.cpu_count()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                machine_info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
