"""Locust users for an OpenAI-compatible chat endpoint, with streaming TTFT as its own metric."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from locust import FastHttpUser, constant_pacing, task

API_KEY = os.environ.get("TOLLWAY_API_KEY", "tollway-demo-key")
MODEL = os.environ.get("TOLLWAY_MODEL", "mock/gpt-4o-mini")
METADATA = os.environ.get("TOLLWAY_METADATA", '{"project_id":"p1"}')
PATH = "/v1/chat/completions"
# Each user sends one request per PACING seconds, so -u N gives about N/PACING requests per second
# for as long as latency stays below PACING (Locust is closed-loop: a slow server slows it down).
PACING_S = float(os.environ.get("TOLLWAY_PACING_S", "1"))

HEADERS = {
    "authorization": f"Bearer {API_KEY}",
    "content-type": "application/json",
    "x-tfy-metadata": METADATA,
}


def chat_body(stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Say hello in one short sentence."},
        ],
        "max_tokens": 25,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def has_content(data: bytes) -> bool:
    """True when an SSE `data:` payload is a chunk carrying generated text (not role/usage)."""
    # Cheap test first: most payloads either lack the key or carry it, parsing only when needed.
    if b'"content"' not in data:
        return False
    choices = json.loads(data).get("choices") or []
    return any((c.get("delta") or {}).get("content") for c in choices)


class ChatUser(FastHttpUser):
    """Non-streaming chat completions."""

    host = "http://127.0.0.1:8080"
    wait_time = constant_pacing(PACING_S)
    body = chat_body(stream=False)

    @task
    def chat(self) -> None:
        with self.client.post(
            PATH, data=self.body, headers=HEADERS, name="chat", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}: {(resp.text or '')[:200]}")
            elif b'"choices"' not in (resp.content or b""):
                resp.failure("no choices in the response")


class StreamingChatUser(FastHttpUser):
    """Streaming chat completions; reports the whole stream as "chat stream" and TTFT apart."""

    host = "http://127.0.0.1:8080"
    wait_time = constant_pacing(PACING_S)
    body = chat_body(stream=True)

    @task
    def chat_stream(self) -> None:
        start = time.perf_counter()
        with self.client.post(
            PATH,
            data=self.body,
            headers=HEADERS,
            name="chat stream",
            stream=True,
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            raw = resp._response  # geventhttpclient response: readline returns each SSE line
            if raw is None:
                resp.failure("no response body")
                return
            ttft_ms: float | None = None
            done = False
            while line := raw.readline(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                # TTFT is the first generated text, not the response headers or a role-only chunk.
                if ttft_ms is None and has_content(data):
                    ttft_ms = (time.perf_counter() - start) * 1000
                    self.environment.events.request.fire(
                        request_type="SSE",
                        name="TTFT",
                        response_time=ttft_ms,
                        response_length=0,
                        exception=None,
                        context={},
                    )
            # With stream=True Locust times only the headers; report the whole stream instead.
            resp.request_meta["response_time"] = (time.perf_counter() - start) * 1000
            if not done:
                resp.failure("stream ended without [DONE]")
            elif ttft_ms is None:
                resp.failure("stream carried no content")
