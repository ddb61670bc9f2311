"""The server-rendered pages, and the live block each page's script polls for."""

from __future__ import annotations

import httpx

from tests.conftest import SECRET
from tests.dashboard.conftest import seed_drift, seed_problems
from tests.support import crm


def test_pages_render_what_an_operator_needs(client: httpx.Client, redis_url: str) -> None:
    crm.post(client, SECRET, crm.upsert("mass", "apt-1", 1))
    seed_problems(redis_url)
    overview = client.get("/dashboard/")
    assert overview.status_code == 200 and "<svg" in overview.text
    assert "3 problem(s) need an operator" in overview.text
    problems = client.get("/dashboard/problems").text
    assert "Release would delete 2 listing(s) on travtus" in problems
    assert "<li>apt-8" in problems and "unit_type is not allowed" in problems
    targets = client.get("/dashboard/targets").text
    assert "API key, no token" in targets and "5 of 5 now" in targets
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
