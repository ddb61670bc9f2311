"""The shared per-target request rate (bridge.delivery.ratelimit, GCRA) against the test Redis.
Time is passed in explicitly, so nothing sleeps."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bridge.delivery.ratelimit import RateLimiter

T0 = 1_800_000_000_000
PER_MINUTE = 60  # one request a second
INTERVAL = 60_000 / PER_MINUTE
BURST = 5


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[Redis]]:
    """Two connections, as two workers would have."""
    made = [Redis.from_url(redis_url), Redis.from_url(redis_url)]
    yield made
    for client in made:
        await client.aclose()


async def take(limiter: RateLimiter, now_ms: int, target: str = "rentix",
               per_minute: int = PER_MINUTE) -> int:
    return await limiter.acquire(target, per_minute, now_ms, burst=BURST)


async def test_a_burst_goes_at_once_and_the_next_request_waits_one_interval(
    clients: list[Redis],
) -> None:
    limiter = RateLimiter(clients[0])
    assert [await take(limiter, T0) for _ in range(BURST)] == [0] * BURST
    assert await take(limiter, T0) == INTERVAL


async def test_a_refused_request_uses_none_of_the_budget(clients: list[Redis]) -> None:
    limiter = RateLimiter(clients[0])
    for _ in range(BURST):
        await take(limiter, T0)
    assert [await take(limiter, T0) for _ in range(3)] == [INTERVAL] * 3


async def test_waits_shrink_as_time_passes_and_the_budget_refills(clients: list[Redis]) -> None:
    limiter = RateLimiter(clients[0])
    for _ in range(BURST):
        await take(limiter, T0)
    assert await take(limiter, T0 + 250) == 750
    assert await take(limiter, T0 + 900) == 100
    assert await take(limiter, T0 + 1000) == 0  # one interval later: one more request
    assert await take(limiter, T0 + 1000) == INTERVAL
    # After a quiet spell a full burst is available again, and no more.
    quiet = T0 + 60_000
    assert [await take(limiter, quiet) for _ in range(BURST)] == [0] * BURST
    assert await take(limiter, quiet) > 0


async def test_limiters_sharing_a_target_share_its_budget(clients: list[Redis]) -> None:
    first, second = RateLimiter(clients[0]), RateLimiter(clients[1])
    assert [await take(first, T0) for _ in range(3)] == [0, 0, 0]
    assert [await take(second, T0) for _ in range(2)] == [0, 0]
    assert await take(first, T0) == INTERVAL
    assert await take(second, T0) == INTERVAL
    # Another target has a budget of its own.
    assert [await take(second, T0, target="travtus") for _ in range(BURST)] == [0] * BURST


async def test_a_fractional_interval_keeps_a_minute_within_the_rate_and_burst(
    clients: list[Redis],
) -> None:
    limiter = RateLimiter(clients[0])
    per_minute = 280  # the default: 214.28... ms apart
    now, allowed = T0, 0
    while now < T0 + 60_000:  # ask again as soon as told to
        wait = await take(limiter, now, per_minute=per_minute)
        assert wait <= math.ceil(60_000 / per_minute)
        allowed, now = (allowed + 1, now) if wait == 0 else (allowed, now + wait)
    assert per_minute <= allowed <= per_minute + BURST
