"""The compaction's script is given every key it touches (compact.lua's header): the listing's
and its body, the group's, and each target's ledger hashes. Against the session's Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.desired import read_listings
from bridge.delivery.tombstones import COMPACT, Tombstones, compact_keys
from bridge.scripts import Script

T0 = now_ms()
HORIZON_MS = 86_400_000


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.Redis.from_url(redis_url) as connection:
        yield connection


def deleted(r: redis.Redis, ref: str) -> None:
    """A deleted listing of g1 that every ledger hash still mentions, under g1's lease."""
    r.set(ks().LEASE + "g1", "token-1")
    r.hset(ks().LISTING + ref, mapping={"g": "g1", "v": 3, "t": T0, "d": "1", "at": T0})
    r.set(ks().BODY + ref, '{"ref": "gone"}')
    r.sadd(ks().MEMBERS + "g1", ref)
    r.hset(ks().DIRTY + "g1", ref, 7)
    for target in ("rentix", "travtus"):
        r.hset(ks().QUARANTINE + target, ref, "{}")
        r.hset(ks().INTENT + target, ref, "{}")
    r.hset(ks().ACCEPTED + "rentix", ref, "{}")
    r.hset(ks().ADOPT + "rentix", ref, "1")
    r.sadd(ks().LINKED + "rentix", ref)


async def test_each_targets_entries_go_through_the_keys_it_was_given(
    r: redis.Redis, client: aioredis.Redis
) -> None:
    deleted(r, "apt-1")
    listings = list((await read_listings(client, ["apt-1"])).values())
    done = await Tombstones(client, HORIZON_MS).compact(
        "g1", "token-1", T0, listings, ["rentix", "travtus"], ["rentix"])
    assert done == 1
    assert r.hgetall(ks().LISTING + "apt-1") == {"g": "g1", "v": "3", "t": str(T0), "d": "1"}
    assert r.zscore(ks().TOMBSTONES, "apt-1") == T0 + HORIZON_MS
    for key in compact_keys("g1", ["apt-1"], ["rentix", "travtus"], ["rentix"]):
        if key not in (ks().LEASE + "g1", ks().LISTING + "apt-1", ks().TOMBSTONES):
            assert not r.exists(key), key


async def test_keys_that_do_not_match_the_targets_counted_are_refused_and_nothing_written(
    r: redis.Redis, client: aioredis.Redis
) -> None:
    deleted(r, "apt-1")
    before = {key: r.dump(key) for key in r.keys("lb:*")}
    keys = compact_keys("g1", ["apt-1"], ["rentix"], [])  # one target short of ARGV's two
    with pytest.raises(ResponseError, match=r"compact\.lua: 8 keys"):
        await Script(client, COMPACT)(keys=keys, args=[
            "g1", "token-1", HORIZON_MS, orjson.dumps([["apt-1", 3, T0]]), 2, 0])
    assert {key: r.dump(key) for key in r.keys("lb:*")} == before
