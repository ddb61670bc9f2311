"""A group's change counter never goes backwards, whatever the lifetimes of its keys (issue 25).

lb:pending (the counter) and lb:settled (what each target settled, in counter values) expire on
their own; when the counter is gone and a target's settled seq is not, the fold must go on above
it, or claims leave the new change out as settled. Driven by the real fold and the real claim
script, with the keys set as the lifetimes would leave them.
"""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from bridge import constants as k
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.claims import Flushes
from bridge.settings import Settings
from tests.support.ingest import Scripts

TARGETS = ("rentix", "travtus")



@pytest.fixture
def flushes(client: aioredis.Redis, settings: Settings) -> Flushes:
    return Flushes(client, lease_ms=60_000, debounce=settings.debounce, targets=TARGETS)


def upsert(r: redis.Redis, settings: Settings, webhook_id: str, ref: str, at: int) -> None:
    assert Scripts(r, settings)(webhook_id, at, "u", "g1", at, ref, -1, "{}") == [1, 1]


async def test_a_change_after_the_counter_expired_is_planned_though_targets_settled_more(
    r: redis.Redis, settings: Settings, flushes: Flushes
) -> None:
    """What the lifetimes left: lb:pending gone (idle), lb:settled still there (a flush's
    finish renewed it). A brand-new listing must be planned for both targets."""
    r.hset(ks().SETTLED + "g1", mapping={"rentix": 5, "travtus": 4})
    assert not r.exists(ks().PENDING + "g1")

    upsert(r, settings, "wh-1", "apt-new", now_ms())

    claim = await flushes.claim("g1", now_ms())
    assert claim is not None
    for target in TARGETS:
        assert [listing.ref for listing in claim.unsettled(target)] == ["apt-new"], target
    assert claim.seq == "6" and r.hget(ks().DIRTY + "g1", "apt-new") == "6"


async def test_the_counter_starts_above_unsettled_changes_too(
    r: redis.Redis, settings: Settings, flushes: Flushes
) -> None:
    """A listing changed at seq 9 that no target settled: the next change of the group is
    10, above it, so claims and finishes keep telling them apart."""
    r.hset(ks().SETTLED + "g1", mapping={"rentix": 3, "travtus": 3})
    r.hset(ks().DIRTY + "g1", "apt-old", 9)

    upsert(r, settings, "wh-1", "apt-new", now_ms())

    assert r.hget(ks().PENDING + "g1", "seq") == "10"
    assert r.hgetall(ks().DIRTY + "g1") == {"apt-old": "9", "apt-new": "10"}
    claim = await flushes.claim("g1", now_ms())
    assert claim is not None
    assert claim.changed == {"apt-new": 10}  # apt-old has no hash: a bare tombstone
    assert "apt-new" in [listing.ref for listing in claim.unsettled("rentix")]


def test_every_batch_that_changes_a_group_renews_its_counter_and_changes(
    r: redis.Redis, settings: Settings
) -> None:
    """Not only a burst's first change: a group changed without a claim in between (a flush
    that never comes, a target paused) keeps its counter as long as it keeps changing."""
    upsert(r, settings, "wh-1", "apt-1", now_ms())
    r.hset(ks().SETTLED + "g1", "rentix", 1)
    for key in (ks().PENDING, ks().DIRTY, ks().SETTLED):
        r.pexpire(key + "g1", 5_000)  # as if the group's last renewal were long ago

    upsert(r, settings, "wh-2", "apt-2", now_ms())  # the same burst: no claim between

    for key in (ks().PENDING, ks().DIRTY, ks().SETTLED):
        assert k.GROUP_IDLE_MS - 60_000 < r.pttl(key + "g1") <= k.GROUP_IDLE_MS, key
