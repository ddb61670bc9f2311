"""Bodies the webhook stored as they came are packed by the flush that claims them, exactly or
not at all. Against the session's Redis, fed by the real ingest script."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from bridge import constants as k
from bridge.delivery.claims import Flushes
from bridge.delivery.desired import decode_hash
from bridge.delivery.repack import Repacker
from bridge.settings import Settings
from tests.delivery.test_claims import Ingest

T0 = 1_700_000_000_000


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.Redis.from_url(redis_url) as connection:
        yield connection


async def test_a_claimed_body_is_packed_and_reads_back_the_same(
    client: aioredis.Redis, r: redis.Redis, settings: Settings
) -> None:
    ingest = Ingest(r, settings)
    ingest.upsert("g1", "apt-1", T0, rooms=3, note="Chișinău")
    plain = r.hget(k.LISTING + "apt-1", "body")
    assert plain is not None and plain.startswith("{")
    claim = await Flushes(client, 60_000, settings.debounce).claim("g1", T0 + 1)
    assert claim is not None
    assert await Repacker(client).repack(claim.listings) == 1
    packed = r.hget(k.LISTING + "apt-1", "body")
    assert packed is not None and packed.startswith("~1") and len(packed) < len(plain)
    listing = decode_hash("apt-1", r.hgetall(k.LISTING + "apt-1"))
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
    listing = decode_hash("apt-1", r.hgetall(k.LISTING + "apt-1"))
    assert listing is not None and listing.body == {"ref": "apt-1", "rooms": 4}
