"""A per-target request rate shared by every worker: GCRA in one Lua script."""

from __future__ import annotations

import math

from redis.asyncio import Redis

from bridge import constants as k

# GCRA: keep the "theoretical arrival time"; a request is allowed when it is not more than the
# burst tolerance ahead of now. Returns 0 (allowed, recorded) or how many ms to wait.
ACQUIRE = """
local key, now = KEYS[1], tonumber(ARGV[1])
local interval, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', key) or now), now)
if tat - burst > now then return math.ceil(tat - burst - now) end
redis.call('SET', key, tat + interval, 'PX', math.ceil(tat + interval - now) + 1000)
return 0
"""


class RateLimiter:
    def __init__(self, redis: Redis) -> None:
        self._acquire = redis.register_script(ACQUIRE)

    async def acquire(self, target: str, per_minute: int, now_ms: int, burst: int = 5) -> int:
        """0 if a request to ``target`` may go now, else the milliseconds to wait."""
        interval = 60_000 / per_minute
        tolerance = math.floor(interval * (burst - 1))
        wait = await self._acquire(keys=[f"{k.RATE_LIMIT}{target}"],
                                   args=[now_ms, interval, tolerance])
        return int(wait)
