"""The shared per-target request rate (bridge.delivery.ratelimit, GCRA) against the test Redis.
Time is passed in explicitly, so nothing sleeps."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bridge import constants as k
from bridge.constants import ks
from bridge.delivery.ratelimit import RateLimiter, read_pace

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


# Reads (reconcile's read-back): their own share, and within the whole ------------------------

SHARE = 0.25  # 15 reads a minute out of 60: one every 4 s


async def read(limiter: RateLimiter, now_ms: int, share: float = SHARE,
               target: str = "rentix") -> int:
    return await limiter.acquire_read(target, PER_MINUTE, share, now_ms, burst=BURST)


async def minute_of(limiter: RateLimiter, readers: int, writers: int) -> tuple[int, int]:
    """Readers and writers each ask again as soon as told to, for one minute of simulated
    time, earliest first (reads first on a tie); how many reads and writes went."""
    ready = [(T0, "read", i) for i in range(readers)] + [(T0, "write", i) for i in range(writers)]
    counts = {"read": 0, "write": 0}
    while ready:
        ready.sort()
        now, kind, i = ready.pop(0)
        if now >= T0 + 60_000:
            continue
        wait = await (read(limiter, now) if kind == "read" else take(limiter, now))
        counts[kind] += wait == 0
        ready.append((now + wait if wait else now, kind, i))
    return counts["read"], counts["write"]


async def test_reads_alone_are_limited_to_their_share(clients: list[Redis]) -> None:
    limiter = RateLimiter(clients[0])
    reads, _ = await minute_of(limiter, readers=3, writers=0)
    share = PER_MINUTE * SHARE
    assert share <= reads <= share + BURST
    other = "travtus"
    assert [await read(limiter, T0, target=other) for _ in range(BURST)] == [0] * BURST
    assert await read(limiter, T0, target=other) == INTERVAL / SHARE  # every 4 s, not 1 s


async def test_reads_and_writes_together_never_exceed_the_whole_budget(
        clients: list[Redis]) -> None:
    reads, writes = await minute_of(RateLimiter(clients[0]), readers=2, writers=2)
    assert reads + writes <= PER_MINUTE + BURST
    assert reads <= PER_MINUTE * SHARE + BURST
    assert writes >= PER_MINUTE * (1 - SHARE)  # the rest of the budget stays the writers'


async def test_reads_count_against_the_target_budget(clients: list[Redis]) -> None:
    limiter = RateLimiter(clients[0])
    assert [await read(limiter, T0, share=1.0) for _ in range(BURST)] == [0] * BURST
    assert await take(limiter, T0) == INTERVAL  # the writes' bucket is spent by the reads
    # Another target's reads and writes are untouched.
    assert await read(limiter, T0, target="travtus") == 0
    assert await take(limiter, T0, target="travtus") == 0


async def test_a_refused_read_takes_nothing_from_either_bucket(clients: list[Redis]) -> None:
    limiter = RateLimiter(clients[0])
    for _ in range(BURST):
        await read(limiter, T0)
    # Refused by its own bucket (4 s), while the whole has one more second to give ...
    assert [await read(limiter, T0) for _ in range(3)] == [INTERVAL / SHARE] * 3
    assert await take(limiter, T0) == INTERVAL  # ... and the refusals took none of it.
    writer = RateLimiter(clients[1])
    fresh = T0 + 60_000
    for _ in range(BURST):
        await take(writer, fresh)
    # Refused by the whole: the read's own bucket is not spent either.
    assert await read(limiter, fresh) == INTERVAL
    assert [await read(limiter, fresh + INTERVAL) for _ in range(2)] == [0, INTERVAL]


@pytest.mark.parametrize("share", [0, -0.1, 1.5, float("nan")])
async def test_a_read_share_outside_zero_to_one_is_refused(clients: list[Redis],
                                                           share: float) -> None:
    with pytest.raises(ValueError, match="read_share"):
        await read(RateLimiter(clients[0]), T0, share=share)


async def test_read_pace_sleeps_until_a_read_is_allowed(clients: list[Redis]) -> None:
    now = [T0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += int(seconds * 1000)

    pace = read_pace(RateLimiter(clients[0]), "rentix", PER_MINUTE, SHARE,
                     clock=lambda: now[0], sleep=sleep)
    for _ in range(BURST):
        await pace()
    assert slept == [] and now[0] == T0
    await pace()
    assert slept == [INTERVAL / SHARE / 1000] and now[0] == T0 + INTERVAL / SHARE
    # The reads' bucket lives under its documented key, expiring a second past its arrival
    # time (six reads: T0 + 24 s, set at T0 + 4 s).
    ttl = await clients[0].pttl(ks().bucket("rentix") + k.READS)
    assert 20_000 < ttl <= 21_000
