"""A flush's hooks into each listing's story (bridge.delivery.trace) with the real planner, the
real adapters built offline and a real ledger over the test Redis: which listings each decision
is told to, and what it says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bridge import stories
from bridge.constants import ks
from bridge.delivery.claims import Claim
from bridge.delivery.desired import DesiredListing
from bridge.delivery.ledger import Accepted, Held, Ledger, Quarantined, sync_scope
from bridge.delivery.planning import desired_digest, plan_listings, plan_sync
from bridge.delivery.trace import FlushTrace
from bridge.portals import RentixAdapter, TravtusAdapter
from tests.support.canonical import listing

OFFLINE = "http://127.0.0.1:9"  # never called: the hooks make no portal call
NOW = 1_800_000_000_000
RENTIX = RentixAdapter("rentix", f"{OFFLINE}/rentix/api/v1", "k")
TRAVTUS = TravtusAdapter("travtus", f"{OFFLINE}/travtus", f"{OFFLINE}/t", "id", "secret")


@pytest.fixture
async def ledger(redis_url: str) -> AsyncIterator[Ledger]:
    client = Redis.from_url(redis_url)
    yield Ledger(client, trace_ttl_ms=60_000)
    await client.aclose()


def live(ref: str, received: int = NOW, **changes: Any) -> DesiredListing:
    return DesiredListing(ref=ref, group="g", version=1, occurred_ms=NOW, deleted=False,
                          body=listing(external_ref=ref, **changes), received_ms=received)


def claim(*listings: DesiredListing, first: int | None = NOW) -> Claim:
    return Claim("g", "7", "3", first, list(listings))


async def told(ledger: Ledger, ref: str) -> list[tuple[str, str]]:
    """(target, decision) of the ref's decisions, oldest first."""
    raw = await ledger.redis.lrange(ks().TRACE + ref, 0, -1)  # type: ignore[misc]
    return [(e["target"], e["decision"]) for e in map(stories.unpack, reversed(raw))
            if e["kind"] == "decision"]


async def last(ledger: Ledger, ref: str) -> dict[str, Any]:
    entry: dict[str, Any] = stories.unpack(await ledger.redis.lindex(ks().TRACE + ref, 0))  # type: ignore[misc]
    return entry


async def test_unchanged_is_said_only_of_this_flush_news(ledger: Ledger) -> None:
    news, quiet = live("news"), live("quiet", received=NOW - 60_000)
    held = {ref: Accepted(digest, None, NOW) for ref, digest in (
        ("news", _digest(news)), ("quiet", _digest(quiet)))}
    trace = FlushTrace(ledger, claim(news, quiet))
    plan = plan_listings("rentix", RENTIX, [news, quiet], held, {})
    assert plan.writes == []
    await trace.listings_planned("rentix", RENTIX, plan, held, {})
    assert await told(ledger, "news") == [("rentix", "unchanged")]
    assert (await last(ledger, "news"))["detail"] == "the target holds this content already"
    assert await told(ledger, "quiet") == []
    assert 0 < await ledger.redis.pttl(ks().TRACE + "news") <= 60_000


async def test_a_flush_without_news_tells_no_unchanged_listing(ledger: Ledger) -> None:
    one = live("one")
    trace = FlushTrace(ledger, claim(one, first=None))  # a retry: nothing new arrived
    held = {"one": Accepted(_digest(one), None, NOW)}
    await trace.listings_planned("rentix", RENTIX, plan_listings("rentix", RENTIX, [one], held,
                                                                 {}), held, {})
    assert await told(ledger, "one") == []


async def test_a_stop_is_told_to_the_write_at_hand_and_those_after_it_once(
    ledger: Ledger
) -> None:
    listings = [live(ref) for ref in ("a", "b", "c")]
    trace = FlushTrace(ledger, claim(*listings))
    plan = plan_listings("rentix", RENTIX, listings, {}, {})
    await trace.listings_planned("rentix", RENTIX, plan, {}, {})
    trace.turn_to("rentix", "a")
    await trace.sent("rentix", plan.writes[0])
    trace.turn_to("rentix", "b")
    assert await trace.rate_limited("rentix", NOW + 5_000) == NOW + 5_000
    assert await trace.retrying("rentix", NOW + 9_000, "later") == NOW + 9_000  # told nobody
    assert await told(ledger, "a") == [("rentix", "sent")]
    assert await told(ledger, "b") == await told(ledger, "c") == [("rentix", "rate-limited")]
    assert (await last(ledger, "c"))["until"] == NOW + 5_000


async def test_a_stop_before_any_plan_is_told_to_the_news(ledger: Ledger) -> None:
    trace = FlushTrace(ledger, claim(live("a"), live("old", received=NOW - 1)))
    await trace.paused("rentix", "credentials refused")
    assert await told(ledger, "a") == [("rentix", "paused")]
    assert (await last(ledger, "a"))["detail"] == "credentials refused"
    assert await told(ledger, "old") == []


async def test_a_create_waiting_for_adoption_leaves_the_writes_after_it(ledger: Ledger) -> None:
    listings = [live(ref) for ref in ("a", "b")]
    trace = FlushTrace(ledger, claim(*listings))
    plan = plan_listings("rentix", RENTIX, listings, {}, {})
    await trace.listings_planned("rentix", RENTIX, plan, {}, {})
    trace.turn_to("rentix", "a")
    await trace.adoption("rentix", "a")
    await trace.rate_limited("rentix", NOW)
    assert await told(ledger, "a") == [("rentix", "waiting for adoption")]
    assert await told(ledger, "b") == [("rentix", "rate-limited")]


async def test_a_group_sync_tells_the_listings_it_changes_and_a_hold_its_deletions(
    ledger: Ledger
) -> None:
    same, new, quiet = live("same"), live("new"), live("quiet", received=NOW - 1)
    accepted = {"same": Accepted(_digest(same, TRAVTUS), None, NOW),
                "quiet": Accepted(_digest(quiet, TRAVTUS), None, NOW),
                "gone": Accepted("d-gone", None, NOW)}
    trace = FlushTrace(ledger, claim(same, new, quiet))
    plan = plan_sync(TRAVTUS, "g", [same, new, quiet], accepted, {}, "last", NOW)
    await trace.sync_planned("travtus", TRAVTUS, plan, accepted, {})
    assert trace.call_refs("travtus", plan.refs) == ["new", "gone"]
    assert trace.call_refs("rentix", ["x"]) == ["x"]
    await trace.sync_sent("travtus", plan)
    sent = await last(ledger, "gone")
    assert (sent["decision"], sent["operation"], sent["digest"], sent["key"]) == (
        "sent", "sync", None, plan.key)
    assert sent["detail"] == "left out of the sync: the portal deletes it"
    await trace.held("travtus", Held(plan.digest, "too many", ["gone", "elsewhere"], 3, NOW))
    assert await told(ledger, "same") == [("travtus", "unchanged")]
    assert await told(ledger, "new") == [("travtus", "sent"), ("travtus", "held")]
    assert await told(ledger, "elsewhere") == [("travtus", "held")]
    assert await told(ledger, "quiet") == []
    assert (await last(ledger, "new"))["digest"] == plan.digest


async def test_a_refused_group_sync_is_told_to_every_listing_it_changes(ledger: Ledger) -> None:
    one, two = live("one"), live("two")
    trace = FlushTrace(ledger, claim(one, two))
    plan = plan_sync(TRAVTUS, "g", [one, two], {}, {}, None, NOW)
    await trace.sync_planned("travtus", TRAVTUS, plan, {}, {})
    refusal = Quarantined(plan.digest, "g", "invalid_group", "no such group", None, NOW)
    await trace.quarantined("travtus", {sync_scope("g"): refusal})
    assert await told(ledger, "one") == await told(ledger, "two") == [
        ("travtus", "quarantined")]
    assert (await last(ledger, "two"))["detail"] == "invalid_group: no such group"
    # Planned again, unchanged since: not sent, and told as refused before.
    again = FlushTrace(ledger, claim(one, two))
    await again.sync_planned("travtus", TRAVTUS, plan, {}, {sync_scope("g"): refusal})
    assert (await last(ledger, "one"))["detail"] == (
        "refused before with this content: invalid_group: no such group")


async def test_content_refused_before_is_told_as_still_quarantined(ledger: Ledger) -> None:
    bad = live("bad")
    refused = {"bad": Quarantined(_digest(bad), "g", "validation_failed", "no", "files", NOW)}
    trace = FlushTrace(ledger, claim(bad))
    plan = plan_listings("rentix", RENTIX, [bad], {}, refused)
    assert plan.writes == [] and plan.invalid == []
    await trace.listings_planned("rentix", RENTIX, plan, {}, refused)
    entry = await last(ledger, "bad")
    assert (entry["decision"], entry["digest"]) == ("quarantined", _digest(bad))
    assert entry["detail"] == "refused before with this content: validation_failed (files): no"


def _digest(desired: DesiredListing, adapter: RentixAdapter | TravtusAdapter = RENTIX) -> str:
    found = desired_digest(adapter, desired)
    assert found is not None
    return found
