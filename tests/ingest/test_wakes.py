"""The webhook's wake-ups on a cluster (``bridge.ingest.store.Wakes``): each request's ZADD goes
out after its call, and requests whose calls came while one was in flight share the next."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis

from bridge import constants as k
from bridge.ingest.store import Wakes


async def test_concurrent_wake_ups_share_round_trips_and_each_is_covered(
    redis_url: str, r: redis.Redis
) -> None:
    r.config_resetstat()
    async with aioredis.Redis.from_url(redis_url) as client:
        wakes = Wakes(client)
        await asyncio.gather(*(wakes.wake("wakes-a") for _ in range(50)))
        sent = int(r.info("commandstats")["cmdstat_zadd"]["calls"])
        assert 1 <= sent <= 2  # the first, then one for all that came while it was out
        assert r.zscore(k.WAKE, "wakes-a") == 0
        # A wake-up after the last went out gets a ZADD of its own, after its call.
        r.zadd(k.WAKE, {"wakes-a": 5})  # a turn took it meanwhile
        await wakes.wake("wakes-a")
        assert r.zscore(k.WAKE, "wakes-a") == 0
        first = wakes.wake("wakes-b")
        await asyncio.sleep(0)  # its ZADD is out
        r.zadd(k.WAKE, {"wakes-b": 7})  # taken by a turn before the second call
        await asyncio.gather(first, wakes.wake("wakes-b"))
        assert r.zscore(k.WAKE, "wakes-b") == 0  # the second call's own ZADD came after
    r.zrem(k.WAKE, "wakes-a", "wakes-b")
