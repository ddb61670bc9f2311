"""Problems lead to each listing's story: a quarantined listing's ref and each deletion of a held
change link to its trace page (the held change shown once per group, with its digest); and on
that page the story's "when" column stays on one line however wide the details are."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator

import httpx
import pytest

from bridge.app import create_app
from bridge.clock import now_ms
from bridge.delivery.ledger import Attempt, Held, Ledger, Quarantined
from bridge.settings import Settings
from tests.conftest import SECRET
from tests.dashboard.conftest import run
from tests.support import crm
from tests.support.cdp import Browser, find_chromium
from tests.support.servers import serve_app

REFS = ("apt/1 b", "apt-8", "apt-9")  # a slash and a space: the link must still find it


def seed(client: httpx.Client, redis_url: str, folded: Callable[[], int]) -> None:
    """The listings as the CRM sent them (so each has a story), then a held change on both
    targets (one per group) that would delete two of them, and the first quarantined."""
    for ref in REFS:
        crm.post(client, SECRET, crm.upsert("mass", ref, 1))
    folded()

    async def problems(ledger: Ledger) -> None:
        at = now_ms()
        for target in ("rentix", "travtus"):
            await ledger.hold(target, "mass", Held("d-mass", "max_delete_count: 2 > 1",
                                                   ["apt-8", "apt-9"], 1, at))
        await ledger.quarantine("rentix", {REFS[0]: Quarantined(
            "d-q", "mass", "validation_failed", "announcementValue must not be less than 1",
            "announcementValue", at)})

    run(redis_url, problems)


def links(page: str) -> dict[str, str]:
    """Each trace link on the page: its text -> its href."""
    return {html.unescape(text): html.unescape(href) for href, text in
            re.findall(r'<a href="(/dashboard/listings/[^"]+)">([^<]+)</a>', page)}


def test_problem_refs_link_to_their_trace_pages(client: httpx.Client, redis_url: str,
                                                folded: Callable[[], int]) -> None:
    seed(client, redis_url, folded)
    page = client.get("/dashboard/problems").text
    assert page.count("<code>d-mass</code>") == 1  # one held change for the group, its digest
    found = links(page)
    assert set(found) == set(REFS)
    for ref, href in found.items():
        story = client.get(href)
        assert story.status_code == 200, (href, story.text[:200])
        assert f"<h1>Listing {html.escape(ref)}</h1>" in story.text


CHROMIUM = find_chromium()


@pytest.fixture
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    b = Browser(CHROMIUM)
    try:
        yield b
    finally:
        b.close()


# The lines each "when" cell of the story takes, as laid out.
WHEN_LINES = """[...document.querySelectorAll('main table.compact tr td:first-child[title]')]
  .map(td => { const r = document.createRange(); r.selectNodeContents(td);
               return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size; })"""


@pytest.mark.browser
def test_the_story_when_column_does_not_wrap(app_settings: Settings, redis_url: str,
                                             folded: Callable[[], int],
                                             browser: Browser) -> None:
    with serve_app(create_app(app_settings)) as base, \
            httpx.Client(base_url=base, timeout=10) as client:
        seed(client, redis_url, folded)

        async def calls(ledger: Ledger) -> None:
            for n in range(3):  # long details, as a refusal's message makes them
                await ledger.record_attempt(Attempt(
                    now_ms() - 90_000 * n, "rentix", "mass", "upsert", ["apt-8"],
                    f"lb-{'0123456789abcdef' * 4}-{n}", "data_invalid", 400, 12.5, n + 1,
                    "validation_failed " + "announcementValue must not be less than 1; " * 6), [])

        run(redis_url, calls)
        browser.call("Emulation.setDeviceMetricsOverride", width=900, height=800,
                     deviceScaleFactor=1, mobile=False)
        browser.goto(f"{base}/dashboard/problems")
        browser.click("ul.deletions a")  # apt-8, as an operator would
        browser.wait_for("location.pathname === '/dashboard/listings/apt-8'",
                         what="the trace page")
        lines = browser.evaluate(WHEN_LINES)
        assert len(lines) >= 4 and set(lines) == {1}, lines
