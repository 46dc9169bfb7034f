"""`/ui` in a real headless Chromium (Debian's `chromium`, driven by Playwright): the page
loads with an admin key typed in and shows the figures the analytics API returns."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from conftest import CLIENT_KEY, Gateways, Server, gateway_config

ADMIN_KEY = "admin-key-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)


def artifact_dir(tmp_path: Path) -> Path:
    """The pytest tmp dir, and in CI also test-artifacts/ at the repository root."""
    if os.environ.get("CI"):
        out = Path(__file__).resolve().parent.parent / "test-artifacts"
        out.mkdir(exist_ok=True)
        return out
    return tmp_path


def test_dashboard_shows_what_the_api_returns(
    mock_upstream: Server, module_gateways: Gateways, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    extra = f"""---
type: gateway-keys
keys:
  - {{name: ops, key: {ADMIN_KEY}, subject: "user:ops", admin: true}}
"""
    section = f"request_logs: {{path: {tmp_path / 'ui.duckdb'}, flush_interval_ms: 100}}\n"
    config = gateway_config(mock_upstream.url, extra).replace(
        "  max_body_bytes: 65536\n", "  max_body_bytes: 65536\n" + section
    )
    gw = module_gateways.start(config)
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    body = {"model": "mock/small", "messages": [{"role": "user", "content": "hi"}]}
    for team, n in (("red", 3), ("blue", 1)):
        for _ in range(n):
            meta = {"x-tfy-metadata": json.dumps({"team": team})}
            r = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers={**headers, **meta})
            assert r.status_code == 200
    failed = httpx.post(f"{gw.url}/v1/chat/completions", headers=headers,
                        json={**body, "model": "mock/mock-status-400"})  # fmt: skip
    assert failed.status_code == 400
    failed_id = failed.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        total = httpx.get(f"{gw.url}/v1/analytics/summary", headers=ADMIN).json()["data"]
        if total and total[0]["count"] == 5:
            break
        time.sleep(0.2)
    t = total[0]
    by_model = httpx.get(f"{gw.url}/v1/analytics/summary", params={"group_by": "model"},
                         headers=ADMIN).json()["data"]  # fmt: skip
    p50 = {row["model"]: row["latency_p50_ms"] for row in by_model}

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{gw.url}/ui")
            page.fill("#key", ADMIN_KEY)
            page.click("#load")
            page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
            assert page.inner_text("#total-requests") == f"{t['count']:,}"
            assert page.inner_text("#total-errors") == str(t["errors"]) == "1"
            assert page.inner_text("#total-tokens") == f"{t['tokens']:,}"
            assert page.inner_text("#total-cost") == f"{t['cost']:.6f}"
            costs = page.locator("[data-testid=cost-value]").all_inner_texts()
            assert len(costs) == 3  # red, blue, and the failed request without a team
            row = page.locator("#latency tr[data-model='mock/small'] td").all_inner_texts()
            # The page shows one decimal at most ("6" for 6.0): half a unit off, at most (and a
            # value on the boundary, 1.15 shown as 1.2, is 0.05 off plus float error).
            shown = float(row[2].replace(",", ""))
            assert shown == pytest.approx(p50["mock/small"], abs=0.05 + 1e-9)
            page.click(f"#failed tr[data-request-id='{failed_id}']")
            page.wait_for_selector("[data-testid=detail] table")
            detail = page.inner_text("[data-testid=detail]")
            assert failed_id in detail and "mock/mock-status-400" in detail
            shot = artifact_dir(tmp_path) / "request-log-ui.png"
            print(f"screenshot: {shot}")
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            # A non-admin key gets the API's refusal on the page, not figures.
            page.fill("#key", CLIENT_KEY)
            page.click("#load")
            page.wait_for_selector("#error:not(:empty)")
            assert "admin" in page.inner_text("#error")
        finally:
            browser.close()
