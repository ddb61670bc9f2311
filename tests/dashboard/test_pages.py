"""The server-rendered pages, and the live block each page's script polls for."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from bridge.clock import now_ms
from bridge.delivery.budget import Budget
from bridge.delivery.ledger import Ledger
from tests.conftest import SECRET
from tests.dashboard.conftest import run, seed_drift, seed_problems
from tests.ops.test_outbox_view import entry, put, report, send
from tests.support import crm


def test_pages_render_what_an_operator_needs(client: httpx.Client, redis_url: str,
                                             folded: Callable[[], int]) -> None:
    crm.post(client, SECRET, crm.upsert("mass", "apt-1", 1))
    folded()
    seed_problems(redis_url)
    overview = client.get("/dashboard/")
    assert overview.status_code == 200 and "<svg" in overview.text
    assert "3 problem(s) need an operator" in overview.text
    problems = client.get("/dashboard/problems").text
    assert "Release would delete 2 listing(s) on travtus" in problems
    assert '<li><a href="/dashboard/listings/apt-8">apt-8</a>' in problems
    assert "unit_type is not allowed" in problems
    targets = client.get("/dashboard/targets").text
    assert "API key, no token" in targets and "5 of 5 now" in targets
    assert "none (group sync)" in targets  # travtus: no outbox
    assert "bulk at up to 28/min" in targets
    assert 'bulk: <span class="muted">not reported yet</span>' in targets
    found = client.get("/dashboard/groups", params={"q": "apt-1"}).text
    assert 'href="/dashboard/groups/mass"' in found
    group = client.get("/dashboard/groups/mass").text
    assert "apt-1" in group and "pending" in group
    missing = client.get("/dashboard/groups/nope")
    assert missing.status_code == 404 and "no group named" in missing.text
    assert client.get("/dashboard/static/dashboard.js").status_code == 200


def test_live_block_is_the_page_without_its_frame(client: httpx.Client,
                                                  redis_url: str) -> None:
    seed_problems(redis_url)
    live = client.get("/dashboard/problems", headers={"X-Live": "1"})
    assert live.status_code == 200 and "<html" not in live.text and "Held syncs" in live.text
    assert live.headers["x-problem-count"] == "3"


def test_targets_page_has_a_drift_section_per_target(client: httpx.Client,
                                                     redis_url: str) -> None:
    before = client.get("/dashboard/targets").text
    assert "<h1>Drift</h1>" in before and before.count("none yet") == 2
    seed_drift(redis_url)
    page = client.get("/dashboard/targets", headers={"X-Live": "1"}).text
    assert 'id="drift-rentix"' in page and "1 drift, " in page and "1 unknown" in page
    assert "Unknown listings on rentix" in page and "#7" in page and "(whole portal)" in page
    assert "transient: 503 server_error" in page  # travtus's failing check
    assert 'href="/dashboard/groups/west"' in page  # the drifted group, in the latest findings


def test_targets_page_shows_the_outbox_and_the_portals_budgets(client: httpx.Client,
                                                               redis_url: str) -> None:
    async def seed(ledger: Ledger) -> None:
        now = now_ms()
        entries = [entry(f"apt-{i}", now) for i in range(120)]
        await put(ledger.redis, "rentix", entries, now)
        await send(ledger.redis, "rentix", entries[:100], now)
        await report(ledger.redis, "rentix", {"general": Budget(300, 251, now + 30_000, now),
                                              "bulk": Budget(30, 0, now + 20_000, now)})

    run(redis_url, seed)
    page = client.get("/dashboard/targets", headers={"X-Live": "1"}).text
    assert "120 waiting" in page and "100 in the bulk request in flight" in page
    assert 25 < seconds(page, r"general: 251/300, resets in ([\d.]+) s") <= 30
    assert 15 < seconds(page, r"bulk: 0/30, resets in ([\d.]+) s") <= 20
    # The bulk window is spent: two bulks at 28/min wait for it first.
    assert 15 + 4.2 < seconds(page, r"drains in ([\d.]+) s at 28 bulk/min") <= 20 + 4.3


def seconds(page: str, pattern: str) -> float:
    found = re.search(pattern, page)
    assert found, (pattern, page)
    return float(found.group(1))
