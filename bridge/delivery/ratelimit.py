"""A per-target request rate shared by every worker: GCRA in one Lua script.

Reads (reconciliation's read-back) take from the same per-target bucket as writes, so together
they never exceed the target's budget, and also from a bucket of their own at `read_share` of
that rate, so they can never take more than their share of it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from bridge import constants as k
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.portals.readback import Pace
from bridge.scripts import Script, load

ACQUIRE = load(__file__, "ratelimit.lua")  # GCRA over one or more buckets at once

DEFAULT_BURST = 5


class RateLimiter:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._acquire = Script(redis, ACQUIRE)

    async def acquire(self, target: str, per_minute: int, now_ms: int,
                      burst: int = DEFAULT_BURST) -> int:
        """0 if a request to ``target`` may go now, else the milliseconds to wait."""
        return await self._take([(ks().bucket(target), per_minute)], now_ms, burst)

    async def acquire_bulk(self, target: str, per_minute: int, bulk_per_minute: int,
                           now_ms: int, burst: int = DEFAULT_BURST) -> int:
        """0 if a bulk request to ``target`` may go now, else the milliseconds to wait: a bulk
        counts in the target's shared bucket and in its bulk bucket (as Rentix counts it)."""
        buckets = [(ks().bucket(target) + k.BULK, float(bulk_per_minute)),
                   (ks().bucket(target), float(per_minute))]
        return await self._take(buckets, now_ms, burst)

    async def backlog_ms(self, target: str, now_ms: int) -> int:
        """How far ahead the target's shared bucket is booked: the time the requests already
        let through still take at its rate (0 when it is idle)."""
        tat = await self._redis.get(ks().bucket(target))
        return max(0, int(float(tat)) - now_ms) if tat else 0

    async def acquire_read(self, target: str, per_minute: int, read_share: float, now_ms: int,
                           burst: int = DEFAULT_BURST) -> int:
        """0 if a read from ``target`` may go now, else the milliseconds to wait: the read
        bucket (``read_share * per_minute``) is checked first, then the target's shared one;
        the read is counted in both or, when either refuses, in neither."""
        if not 0 < read_share <= 1:
            raise ValueError(f"read_share must be in (0, 1], got {read_share!r}")
        buckets = [(ks().bucket(target) + k.READS, per_minute * read_share),
                   (ks().bucket(target), per_minute)]
        return await self._take(buckets, now_ms, burst)

    async def _take(self, buckets: list[tuple[str, float]], now_ms: int, burst: int) -> int:
        args: list[float] = [now_ms]
        for _, per_minute in buckets:
            interval = 60_000 / per_minute
            args += [interval, math.floor(interval * (burst - 1))]
        wait = await self._acquire(keys=[key for key, _ in buckets], args=args)
        return int(wait)


def read_pace(limiter: RateLimiter, target: str, per_minute: int, read_share: float, *,
              clock: Callable[[], int] = now_ms,
              sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> Pace:
    """A `pace` for the adapters' reads (``iter_listings(pace=...)``, ``find_all(group,
    pace=...)``, ``get_by_external_id(ref, pace=...)``): each call returns once a read from
    ``target`` is allowed, sleeping as long as the limiter says in between."""

    async def pace() -> None:
        while wait := await limiter.acquire_read(target, per_minute, read_share, clock()):
            await sleep(wait / 1000)

    return pace
