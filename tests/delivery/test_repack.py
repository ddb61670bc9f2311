"""Bodies the webhook stored as they came are packed by the flush that claims them, exactly or
not at all. Against the session's Redis, fed by the real ingest script."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.claims import Flushes
from bridge.delivery.desired import decode_hash
from bridge.delivery.repack import Repacker
from bridge.settings import Settings
from tests.delivery.test_claims import Ingest

# The present, as Redis's clock reads it too: its expiries are judged against it.
T0 = now_ms()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.Redis.from_url(redis_url) as connection:
        yield connection


async def test_a_claimed_body_is_packed_and_reads_back_the_same(
    client: aioredis.Redis, r: redis.Redis, settings: Settings
) -> None:
    ingest = Ingest(r, settings)
    ingest.upsert("g1", "apt-1", T0, rooms=3, note="Chișinău")
    plain = r.get(ks().BODY + "apt-1")
    assert plain is not None and plain.startswith("{")
    claim = await Flushes(client, 60_000, settings.debounce).claim("g1", T0 + 1)
    assert claim is not None
    assert await Repacker(client).repack(claim.listings) == 1
    packed = r.get(ks().BODY + "apt-1")
    assert packed is not None and packed.startswith("~1") and len(packed) < len(plain)
    listing = decode_hash("apt-1", r.hgetall(ks().LISTING + "apt-1"), r.get(ks().BODY + "apt-1"))
    assert listing is not None and listing.packed
    assert listing.body == orjson.loads(plain) == claim.listings[0].body
    assert await Repacker(client).repack([listing]) == 0  # packed already: nothing to do


async def test_a_body_that_changed_since_the_claim_is_not_replaced(
    client: aioredis.Redis, r: redis.Redis, settings: Settings
) -> None:
    ingest = Ingest(r, settings)
    ingest.upsert("g1", "apt-1", T0, rooms=3)
    claim = await Flushes(client, 60_000, settings.debounce).claim("g1", T0 + 1)
    assert claim is not None
    ingest.upsert("g1", "apt-1", T0 + 5, rooms=4)  # a newer event meanwhile
    assert await Repacker(client).repack(claim.listings) == 0
    listing = decode_hash("apt-1", r.hgetall(ks().LISTING + "apt-1"), r.get(ks().BODY + "apt-1"))
    assert listing is not None and listing.body == {"ref": "apt-1", "rooms": 4}


def old_layout(r: redis.Redis, ref: str) -> None:
    """Put the body back in the listing hash, as the bridge stored it before lb:body."""
    body = r.get(ks().BODY + ref)
    assert body is not None
    r.delete(ks().BODY + ref)
    r.hset(ks().LISTING + ref, "body", body)


async def test_a_body_kept_in_the_listing_hash_reads_and_moves_to_its_key_when_claimed(
    client: aioredis.Redis, r: redis.Redis, settings: Settings
) -> None:
    ingest = Ingest(r, settings)
    body = {"ref": "apt-1", "rooms": 3, "note": "A long description. " * 10}
    ingest.upsert("g1", "apt-1", T0, rooms=3, note=body["note"])
    old_layout(r, "apt-1")  # a value this long made the hash a hashtable
    assert r.object("encoding", ks().LISTING + "apt-1") == "hashtable"
    listing = decode_hash("apt-1", r.hgetall(ks().LISTING + "apt-1"), r.get(ks().BODY + "apt-1"))
    assert listing is not None and listing.body == body
    claim = await Flushes(client, 60_000, settings.debounce).claim("g1", T0 + 1)
    assert claim is not None and claim.listings[0].body == body
    # Moved: the hash, written afresh without it, is a small listpack again.
    assert "body" not in r.hkeys(ks().LISTING + "apt-1")
    assert r.object("encoding", ks().LISTING + "apt-1") == "listpack"
    assert orjson.loads(r.get(ks().BODY + "apt-1")) == body
    assert await Repacker(client).repack(claim.listings) == 1


async def test_a_newer_body_key_wins_over_a_stale_body_left_in_the_hash(
    client: aioredis.Redis, r: redis.Redis, settings: Settings
) -> None:
    ingest = Ingest(r, settings)
    ingest.upsert("g1", "apt-1", T0, rooms=3)
    old_layout(r, "apt-1")
    ingest.upsert("g1", "apt-1", T0 + 5, rooms=4)  # written to the key; the field is stale
    listing = decode_hash("apt-1", r.hgetall(ks().LISTING + "apt-1"), r.get(ks().BODY + "apt-1"))
    assert listing is not None and listing.body == {"ref": "apt-1", "rooms": 4}
    claim = await Flushes(client, 60_000, settings.debounce).claim("g1", T0 + 6)
    assert claim is not None and claim.listings[0].body == {"ref": "apt-1", "rooms": 4}
    assert "body" not in r.hkeys(ks().LISTING + "apt-1")
    assert orjson.loads(r.get(ks().BODY + "apt-1")) == {"ref": "apt-1", "rooms": 4}
