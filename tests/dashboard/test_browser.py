"""The dashboard in real headless Chromium while events flow: the figures move without a
reload, a held sync is released and a quarantined listing retried from the page; and while
Redis is away, the page says so."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.app import create_app
from tests.conftest import SECRET
from tests.dashboard.conftest import dashboard_settings
from tests.support import crm
from tests.support.cdp import Browser, find_chromium
from tests.support.redis_servers import server
from tests.support.servers import serve_app
from tests.support.stack import Stack, running_stack

CHROMIUM = find_chromium()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it: "
    "apt-get install chromium)")]


@pytest.fixture
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None
    b = Browser(CHROMIUM)
    try:
        yield b
    finally:
        b.close()


def problems(stack: Stack) -> dict[str, list[dict[str, object]]]:
    return stack.bridge.get("/api/problems").json()


def quarantine_one_on_rentix(stack: Stack) -> None:
    """Rentix refuses q-1 once with a field error: quarantined until an operator retries."""
    refusal = {"statusCode": 400, "error": "Bad Request",
               "message": ["announcementValue must not be less than 1"]}
    stack.sandbox.post("/_sandbox/faults", json={"portal": "rentix", "method": "PUT",
                                                 "path": "/listings", "status": 400,
                                                 "body": refusal, "count": 1})
    stack.post(crm.upsert("bad", "q-1", 1))
    stack.wait(lambda: problems(stack)["quarantined"], what="q-1 quarantined")


def hold_a_mass_deletion(stack: Stack) -> None:
    for i in range(8):
        stack.post(crm.upsert("mass", f"apt-{i}", 1))
    stack.wait(lambda: len(stack.travtus_listings("mass")) == 8, what="first sync")
    stack.post(crm.event("group.snapshot", "mass", occurred_at=crm.at(3600),
                         listings=[crm.listing("apt-0", 2), crm.listing("apt-1", 2)]))
    stack.wait(lambda: problems(stack)["held"], what="the held sync")


def keep_posting(base_url: str, stop: threading.Event) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        version = 0
        while not stop.wait(0.15):
            version += 1
            crm.post(http, SECRET, crm.upsert("flow", f"f-{version % 4}", version,
                                              deposit=version))


@pytest.mark.processes
def test_operator_sees_figures_move_releases_and_retries(
    redis_url: str, tmp_path: Path, browser: Browser
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        quarantine_one_on_rentix(stack)
        hold_a_mass_deletion(stack)
        base = str(stack.bridge.base_url).rstrip("/")
        stop = threading.Event()
        flow = threading.Thread(target=keep_posting, args=(base, stop), daemon=True)
        flow.start()
        try:
            # Overview: the received figure climbs on its own; the page is never reloaded.
            browser.goto(f"{base}/dashboard/")
            browser.evaluate("window.sameDocument = true")
            first = int(browser.text("[data-figure=received]") or 0)
            browser.wait_for(f"Number(document.querySelector('[data-figure=received]')"
                             f".textContent) > {first}", timeout=10, what="received to move")
            assert browser.evaluate("window.sameDocument") is True
            assert "problem(s) need an operator" in (browser.text("#live") or "")

            # Problems: the held sync says what release would delete; release it.
            browser.goto(f"{base}/dashboard/problems")
            held = browser.text("[data-held$='/mass']") or ""
            assert "Release would delete 6 listing(s) on rentix and travtus" in held
            assert all(f"apt-{i}" in held for i in range(2, 8))
            release = "[data-held$='/mass'] button.danger"
            browser.click(release)  # arms: the button now spells out the consequence
            assert "click again to confirm" in (browser.text(release) or "")
            browser.click(release)
            browser.wait_for("document.getElementById('flash').textContent"
                             ".includes('Released')", what="the release to be confirmed")
            browser.wait_for("!document.querySelector(\"[data-held$='/mass']\")",
                             what="the held sync to leave the page")
            stack.wait(lambda: set(stack.travtus_listings("mass")) == {"apt-0", "apt-1"},
                       what="the released sync on the portal")

            # Quarantine: retry q-1 from its row. A retry is a new intent, so it goes out under
            # a fresh Idempotency-Key (no replayed refusal) and this time Rentix takes it.
            row = "[data-quarantined='rentix/q-1']"
            assert "announcementValue" in (browser.text(row) or "")
            browser.click(f"{row} button[data-post$='/retry']")
            browser.wait_for("document.getElementById('flash').textContent"
                             ".includes('Retrying 1')", what="the retry to be accepted")
            browser.wait_for(f"!document.querySelector(\"{row}\")",
                             what="q-1 to leave the problems page")
            stack.wait(lambda: "q-1" in stack.rentix_listings(), what="q-1 on the portal")
            browser.goto(f"{base}/dashboard/groups/bad")
            refused = browser.evaluate("[...document.querySelectorAll('td.outcome-data_invalid')]"
                                       ".length")
            accepted = browser.evaluate("[...document.querySelectorAll('td.outcome-ok')].length")
            assert refused == 1 and accepted >= 1, "the refusal and the retry are in the history"
        finally:
            stop.set()
            flow.join(timeout=5)


def test_the_live_page_says_why_it_stopped_updating_and_resumes(browser: Browser) -> None:
    """Redis stopped under an open page: the page says it is not updating, and why (the 503's
    own words), then goes live again once Redis is back; never reloaded."""
    with server() as own_redis, \
            serve_app(create_app(dashboard_settings(own_redis.url))) as base:
        browser.goto(f"{base}/dashboard/")
        browser.evaluate("window.sameDocument = true")
        browser.wait_for("document.getElementById('live-state').textContent.startsWith('live')",
                         what="the first refresh")
        own_redis.stop()
        browser.wait_for("document.getElementById('live-state').textContent.includes("
                         f"'not updating (503: Redis at redis://127.0.0.1:{own_redis.port}/0 "
                         "is not reachable')", what="the page to say why it stopped")
        own_redis.start()
        browser.wait_for("document.getElementById('live-state').textContent.startsWith('live')",
                         what="the page to go live again")
        assert browser.evaluate("window.sameDocument") is True
