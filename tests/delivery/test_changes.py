"""Flushes that cost what changed: a claim returns the listings some target has not settled
(lb:dirty, lb:settled), and the rest by ref only; doubt (mark_due) makes the next claim whole.
Against the real test Redis, fed by the real ingest script."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from bridge import constants as k
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.claims import Claim, Flushes, mark_due
from bridge.settings import Settings
from tests.delivery.test_claims import Ingest

# The present, as Redis's clock reads it too: its expiries are judged against it.
T0 = now_ms()
TARGETS = ["rentix", "travtus"]


@pytest.fixture
async def flushes(redis_url: str, settings: Settings) -> AsyncIterator[Flushes]:
    async with aioredis.Redis.from_url(redis_url) as client:
        yield Flushes(client, lease_ms=60_000, debounce=settings.debounce, targets=TARGETS)


@pytest.fixture
def ingest(r: redis.Redis, settings: Settings) -> Ingest:
    return Ingest(r, settings)


async def claim(flushes: Flushes, at: int) -> Claim:
    taken = await flushes.claim("g1", at)
    assert taken is not None
    return taken


def refs(claim: Claim) -> list[str]:
    return [listing.ref for listing in claim.listings]


async def test_once_every_target_settled_the_group_a_claim_returns_only_the_change(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    for i in range(5):
        ingest.upsert("g1", f"apt-{i}", T0)
    first = await claim(flushes, T0 + 1)
    assert refs(first) == [f"apt-{i}" for i in range(5)] and first.others == []
    assert first.settled == {"rentix": None, "travtus": None}
    await flushes.finish(first, None, TARGETS)
    assert r.hgetall(ks().DIRTY + "g1") == {}  # every change settled by every target

    ingest.upsert("g1", "apt-3", T0 + 10, price=2)
    second = await claim(flushes, T0 + 11)
    assert refs(second) == ["apt-3"]
    assert second.others == ["apt-0", "apt-1", "apt-2", "apt-4"]
    assert second.members == [f"apt-{i}" for i in range(5)]
    assert second.listings[0].body == {"ref": "apt-3", "price": 2}


async def test_a_change_one_target_has_not_settled_is_planned_for_it_alone(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("g1", "apt-1", T0)
    ingest.upsert("g1", "apt-2", T0)
    await flushes.finish(await claim(flushes, T0 + 1), None, TARGETS)
    ingest.upsert("g1", "apt-1", T0 + 10, price=2)
    only_rentix = await claim(flushes, T0 + 11)
    await flushes.finish(only_rentix, None, ["rentix"])  # travtus was, say, rate-limited
    assert r.hkeys(ks().DIRTY + "g1") == ["apt-1"]

    again = await claim(flushes, T0 + 20)
    assert refs(again) == ["apt-1"]
    assert [x.ref for x in again.unsettled("travtus")] == ["apt-1"]
    assert again.unsettled("rentix") == []


async def test_a_change_during_a_flush_stays_to_be_planned(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("g1", "apt-1", T0)
    running = await claim(flushes, T0 + 1)
    ingest.upsert("g1", "apt-1", T0 + 5, price=3)  # arrives while the flush runs
    assert not await flushes.finish(running, None, TARGETS)
    assert r.hkeys(ks().DIRTY + "g1") == ["apt-1"]
    assert refs(await claim(flushes, T0 + 10)) == ["apt-1"]


async def test_doubt_forgets_what_was_settled_and_the_next_claim_is_whole(
    flushes: Flushes, ingest: Ingest, r: redis.Redis, redis_url: str
) -> None:
    for i in range(3):
        ingest.upsert("g1", f"apt-{i}", T0)
    await flushes.finish(await claim(flushes, T0 + 1), None, TARGETS)
    assert refs(await claim(flushes, T0 + 2)) == []
    r.delete(ks().LEASE + "g1")
    async with aioredis.Redis.from_url(redis_url) as client:
        await mark_due(client, ["g1"], T0 + 3)  # an operator's retry, say
    whole = await claim(flushes, T0 + 4)
    assert refs(whole) == ["apt-0", "apt-1", "apt-2"]
    assert whole.settled == {"rentix": None, "travtus": None}



async def test_a_change_counter_created_afresh_starts_above_every_seq_the_group_records(
    flushes: Flushes, ingest: Ingest, r: redis.Redis, redis_url: str
) -> None:
    for i in range(3):
        ingest.upsert("g1", f"apt-{i}", T0 + i)
    await flushes.finish(await claim(flushes, T0 + 5), None, ["rentix"])  # travtus behind
    recorded = max(int(v) for v in [*r.hvals(ks().SETTLED + "g1"), *r.hvals(ks().DIRTY + "g1")])
    r.delete(ks().PENDING + "g1")  # lapsed (idle, or expiries that did not match)
    async with aioredis.Redis.from_url(redis_url) as client:
        await mark_due(client, ["g1"], T0 + 10)
    assert int(r.hget(ks().PENDING + "g1", "seq") or 0) > recorded


async def test_a_finish_gives_the_groups_scheduling_keys_one_lifetime(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("g1", "apt-1", T0)
    ingest.upsert("g1", "apt-2", T0)
    running = await claim(flushes, T0 + 1)
    for key in (ks().PENDING + "g1", ks().DIRTY + "g1"):
        r.pexpire(key, 60_000)  # set long ago: close to lapsing
    await flushes.finish(running, None, ["rentix"])
    keys = ks()
    lifetimes = [r.pttl(key)
                 for key in (keys.PENDING + "g1", keys.DIRTY + "g1", keys.SETTLED + "g1")]
    assert all(k.GROUP_IDLE_MS - 60_000 < ttl <= k.GROUP_IDLE_MS for ttl in lifetimes), lifetimes
