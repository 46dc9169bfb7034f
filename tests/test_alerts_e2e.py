"""Alerts end to end: budget thresholds and rate-limit refusals reach a webhook receiver and
an SMTP server (aiosmtpd) run by the test, exactly once per crossing, from two workers."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CLIENT_KEY, Gateways, Server, free_port, gateway_config

ADMIN_KEY = "admin-key-0123456789"
CLIENT = {"authorization": f"Bearer {CLIENT_KEY}"}
BODY = {"model": "mock/small", "messages": [{"role": "user", "content": "hi"}]}


class Receiver:
    """A JSON webhook receiver on loopback; `fail_first` answers 503 that many times."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[dict[str, Any]] = []
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    self.send_response(503)
                else:
                    outer.posts.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=1)  # the first delivery fails: retried with backoff
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def smtp() -> Iterator[tuple[int, list[Any]]]:
    controller_mod = pytest.importorskip("aiosmtpd.controller")
    got: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            got.append(envelope)
            return "250 OK"

    port = free_port()
    controller = controller_mod.Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, got
    controller.stop()


def wait_for(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not check():
        time.sleep(0.1)


def test_each_crossing_is_sent_once_to_webhook_and_email(
    mock_upstream: Server, module_gateways: Gateways, tmp_path: Path, receiver: Receiver,
    smtp: tuple[int, list[Any]],
) -> None:  # fmt: skip
    smtp_port, mails = smtp
    extra = f"""---
type: gateway-keys
keys:
  - {{name: ops, key: {ADMIN_KEY}, subject: "user:ops", admin: true}}
---
type: gateway-budget-config
rules:
  - {{id: daily, when: {{subjects: ["user:alice"]}}, limit_to: 0.0001, unit: cost_per_day,
      budget_applies_per: [user]}}
---
type: gateway-rate-limiting-config
rules:
  - {{id: capped, when: {{metadata: {{project: capped}}}}, limit_to: 1, unit: requests_per_hour}}
---
type: gateway-alerts-config
channels:
  - {{name: hook, kind: webhook, url: "{receiver.url}"}}
  - name: mail
    kind: email
    smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false}}
    from: gateway@example.com
    to: [finops@example.com]
rules:
  - {{id: spend, kind: budget, budget: daily, thresholds: [50, 100], notify: [hook, mail]}}
  - {{id: refusals, kind: rate_limit, rate_limit: capped, refusals_per_minute: 2,
      notify: [hook]}}
"""
    section = f"request_logs: {{path: {tmp_path / 'a.duckdb'}, flush_interval_ms: 100}}\n"
    config = gateway_config(mock_upstream.url, extra).replace(
        "  max_body_bytes: 65536\n", "  max_body_bytes: 65536\n" + section
    )
    gw = module_gateways.start(config, workers=2)
    if time.gmtime().tm_sec > 45:  # keep the refusals inside one minute
        time.sleep(61 - time.gmtime().tm_sec)
    with httpx.Client(base_url=gw.url, headers=CLIENT, timeout=30) as c:
        refused = 0
        for _ in range(6):
            meta = {"x-tfy-metadata": json.dumps({"project": "capped"})}
            refused += c.post("/v1/chat/completions", json=BODY, headers=meta).status_code == 429
        assert refused >= 4  # one allowed per worker
        statuses = [c.post("/v1/chat/completions", json=BODY).status_code for _ in range(40)]
    assert statuses.count(429) > 0, "the budget ran out"

    def budget_posts() -> list[dict[str, Any]]:
        return [p for p in receiver.posts if p["kind"] == "budget"]

    wait_for(lambda: len(budget_posts()) >= 2 and len(mails) >= 2 and len(receiver.posts) >= 3)
    time.sleep(1.5)  # anything sent twice would have arrived by now
    budget = budget_posts()
    assert sorted(p["threshold"] for p in budget) == [50.0, 100.0]
    assert all(p["entity"] == "user=alice" and p["rule"] == "daily" for p in budget)
    assert budget[-1]["limit_usd"] == pytest.approx(0.0001)
    rate = [p for p in receiver.posts if p["kind"] == "rate_limit"]
    assert len(rate) == 1 and rate[0]["rule"] == "capped" and rate[0]["value"] >= 2
    assert len(mails) == 2
    assert all(m.rcpt_tos == ["finops@example.com"] for m in mails)
    texts = [email.message_from_bytes(m.content, policy=email.policy.default) for m in mails]
    bodies = [t.get_content() for t in texts]  # type: ignore[attr-defined]
    assert all("Budget 'daily' for user=alice" in b for b in bodies), bodies
    assert any("of $0.0001 this period" in b for b in bodies), bodies

    # The events API lists the crossings and where each was delivered.
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    events = httpx.get(f"{gw.url}/v1/analytics/events", headers=admin).json()["data"]
    assert {(e["kind"], e["threshold"]) for e in events} == {
        ("budget", 50.0), ("budget", 100.0), ("rate_limit", 2.0)}  # fmt: skip
    spend = [e for e in events if e["kind"] == "budget"]
    assert all(e["deliveries"] == {"hook": "sent", "mail": "sent"} for e in spend)
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'llm_gateway_alerts_total{channel="hook",result="sent"}' in metrics
