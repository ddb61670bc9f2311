"""One held change per group on the Problems page, /api/problems and GET /api/held, with the
targets it holds; one release or discard applies on all of them (issue 26)."""

from __future__ import annotations

import httpx
import orjson
import redis

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.ledger import Held, Ledger
from tests.dashboard.conftest import run

CAUSES = [{"ref": f"apt-{i}", "cause": "inferred",
           "reason": "absent from the group's latest snapshot"} for i in (8, 9)]


def hold_on_both(redis_url: str, digest: str = "d-west") -> None:
    """The guards held one change of group west on both targets, as a flush records it."""
    async def seed(ledger: Ledger) -> None:
        entry = Held(digest, "it would delete 2 listings", ["apt-8", "apt-9"], 0, now_ms(),
                     [], CAUSES)
        for target in ("rentix", "travtus"):
            await ledger.hold(target, "west", entry)

    run(redis_url, seed)


def test_a_change_held_on_both_targets_is_shown_once_with_both(
    client: httpx.Client, redis_url: str
) -> None:
    hold_on_both(redis_url)
    [held] = client.get("/api/held").json()["held"]
    assert (held["group"], held["targets"], held["digest"]) == (
        "west", ["rentix", "travtus"], "d-west")
    assert held["causes"] == CAUSES
    assert client.get("/api/problems").json()["held"] == [held]
    assert client.get("/api/held", params={"group": "other"}).json() == {"held": []}
    page = client.get("/dashboard/problems").text
    assert page.count('class="held"') == 1
    assert "Release would delete 2 listing(s) on rentix and travtus" in page
    assert "d-west" in page


def test_one_release_without_a_target_applies_on_every_target_holding_the_change(
    client: httpx.Client, redis_url: str, r: redis.Redis
) -> None:
    hold_on_both(redis_url)
    answer = client.post("/api/held/release", json={"group": "west", "digest": "d-west"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["released"]["targets"] == ["rentix", "travtus"]
    for target in ("rentix", "travtus"):
        assert orjson.loads(r.get(f"{ks().RELEASE}{target}:west") or "{}")["digest"] == "d-west"


def test_a_discard_of_a_change_that_differs_on_one_target_does_nothing_anywhere(
    client: httpx.Client, redis_url: str, r: redis.Redis
) -> None:
    hold_on_both(redis_url)
    run(redis_url, lambda ledger: ledger.hold("travtus", "west", Held(
        "d-newer", "it would delete 3 listings", ["apt-7", "apt-8", "apt-9"], 0, now_ms())))
    answer = client.post("/api/held/discard", json={"group": "west", "digest": "d-west"})
    assert answer.status_code == 409 and answer.json()["error"]["type"] == "held_sync_changed"
    assert answer.json()["error"]["held"]["digest"] == "d-newer"
    assert r.hexists(ks().HELD + "rentix", "west") and not r.keys("lb:{t:default}:discarded:*")
    # Named, the target's own change goes alone.
    named = client.post("/api/held/discard",
                        json={"group": "west", "digest": "d-west", "target": "rentix"})
    assert named.status_code == 200 and named.json()["discarded"]["targets"] == ["rentix"]
    assert [h["targets"] for h in client.get("/api/held").json()["held"]] == [["travtus"]]
