"""The outbox job for a target no longer configured stops being scheduled."""

from __future__ import annotations

import redis.asyncio as aioredis

from bridge.constants import ks
from bridge.settings import Settings
from workers.jobs import send_outbox
from workers.tenants import Runtimes


async def test_a_target_no_longer_configured_leaves_the_senders_schedule(
    redis_url: str, settings: Settings
) -> None:
    async with aioredis.Redis.from_url(redis_url) as client:
        await client.zadd(ks().SENDERS, {"gone": 1})
        await client.hset(ks().OUTBOX + "gone", "apt-1", "{}")
        ctx = {"runtimes": Runtimes(client, settings), "redis": client, "state": client}
        answer = await send_outbox(ctx, "gone")
        assert "not a configured per-listing target" in answer
        assert await client.zscore(ks().SENDERS, "gone") is None
        assert await client.hlen(ks().OUTBOX + "gone") == 1  # nothing of it is thrown away
