"""Bounded state for deleted listings, end to end: a real worker, the sandbox as both portals.

Once both targets accepted a deletion, the listing is a bare tombstone (no body, no ledger
entries, out of its group) that expires after the retention horizon (the workers' fold removes
it then); a late event is refused while it lives, and after it expired by the horizon itself;
news brings the listing back."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
import redis

from bridge.constants import ks
from tests.support import crm
from tests.support.stack import Stack, running_stack

# The tier of every test here (tests/support/tiers.py).
pytestmark = pytest.mark.processes

HORIZON_S = 8.0


def at(seconds_from_now: float) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_from_now)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def post(stack: Stack, kind: str, ref: str, version: int, when: str, **fields: object) -> None:
    if kind == "listing.deleted":
        stack.post(crm.event(kind, "g1", when, listing={"external_ref": ref,
                                                         "version": version}))
    else:
        stack.post(crm.event(kind, "g1", when, listing=crm.listing(ref, version, **fields)))


@pytest.mark.processes
def test_an_accepted_deletion_leaves_a_bare_tombstone_that_orders_late_events_then_expires(
    redis_url: str, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    with running_stack(redis_url, tmp_path,
                       retention={"horizon_days": HORIZON_S / 86_400}) as stack:
        post(stack, "listing.updated", "apt-1", 1, at(0))
        post(stack, "listing.updated", "apt-2", 1, at(0))  # the group stays non-empty
        # The portal holds a write a moment before the bridge records its answer: wait for both.
        stack.wait(lambda: "apt-1" in stack.rentix_listings()
                   and "apt-1" in stack.travtus_listings("g1")
                   and r.hexists(f"{ks().ACCEPTED}rentix", "apt-1"),
                   what="apt-1 on both portals, and Rentix's answer recorded")

        post(stack, "listing.deleted", "apt-1", 2, at(0))
        stack.wait(lambda: r.hkeys(ks().LISTING + "apt-1") and not r.exists(ks().BODY + "apt-1"),
                   what="apt-1 compacted to a tombstone")
        # The portals hold the deletion: hidden on Rentix, gone from the Travtus group.
        assert stack.rentix_listings()["apt-1"]["formData"]["announcementStatus"] == "hidden"
        assert "apt-1" not in stack.travtus_listings("g1")
        assert set(r.hkeys(ks().LISTING + "apt-1")) <= {"g", "v", "t", "d", "f", "w"}
        # It lives until its expiry, horizon after its time, and then until no event received
        # before that waits: the fold removes it, not a TTL.
        deleted_at = int(r.hget(ks().LISTING + "apt-1", "t"))
        assert r.zscore(ks().TOMBSTONES, "apt-1") == deleted_at + HORIZON_S * 1000
        assert r.pttl(ks().LISTING + "apt-1") == -1
        assert r.smembers(ks().MEMBERS + "g1") == {"apt-2"}
        assert not r.hexists(f"{ks().ACCEPTED}rentix", "apt-1")
        assert not r.hexists(f"{ks().QUARANTINE}rentix", "apt-1")
        # Small: what orders events, and the webhook id of the deletion (at an equal time, a
        # redelivery of it or of an event it overrode must change nothing).
        sources = r.hget(ks().LISTING + "apt-1", "w")
        assert r.memory_usage(ks().LISTING + "apt-1") <= 150 + len(sources or "")

        # A late update (an older version) is stale while the tombstone lives.
        writes = len(stack.journal())
        post(stack, "listing.updated", "apt-1", 1, at(-1), price={
            "amount": 1, "currency": "EUR", "period": "monthly"})
        assert r.hget(ks().LISTING + "apt-1", "d") == "1"

        # Once it expired, with nothing older waiting, the workers' fold removes it; the same
        # late event is older than the horizon then: still refused.
        stack.wait(lambda: not r.exists(ks().LISTING + "apt-1"), timeout=HORIZON_S + 5,
                   what="the tombstone expired")
        assert not r.zscore(ks().TOMBSTONES, "apt-1")
        post(stack, "listing.updated", "apt-1", 1, at(-HORIZON_S - 1))
        assert not r.exists(ks().LISTING + "apt-1")
        time.sleep(0.5)  # a flush it wrongly caused would have written by now (window 150 ms)
        assert len(stack.journal()) == writes, "nothing was sent for a refused event"

        # News (a newer version, now) brings the listing back, and it does not expire.
        post(stack, "listing.updated", "apt-1", 3, at(0), price={
            "amount": 777, "currency": "EUR", "period": "monthly"})
        stack.wait(lambda: stack.rentix_listings()["apt-1"]["formData"][
            "announcementValue"] == 777, what="apt-1 back on Rentix")
        assert r.pttl(ks().LISTING + "apt-1") == -1
        assert not r.zscore(ks().TOMBSTONES, "apt-1")
    r.close()
