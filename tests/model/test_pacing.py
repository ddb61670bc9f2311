"""Bulks paced against Rentix's fixed rate windows (``Budget.paced_until`` in front of the shared
GCRA, as ``Sender._rate_slot`` does), driven by Hypothesis on a virtual clock: the real GCRA
script on the session's Redis, and a portal model that counts fixed 60-second windows opened by
their first request and reports what is left (``X-RateLimit-Reset`` in whole seconds, rounded
up, as the sandbox and docs/portal-interpretations.md have it).

Over any configured rate, burst, portal limit (above, at or below the configured rate), time
spent composing each bulk and answer delay, across several windows:

- the portal never refuses a bulk (never more in a window than its limit), and
- the bulks never stop for long while there is more to send: no gap between two is longer
  than twice the wider of the configured spacing and the portal's even spread (plus the
  compose time, the answer delay and the reset's rounding). Before the pacing, the GCRA's
  burst spent a window of 30 at 28 a minute ~7 s before it reset, every minute; that example
  is the last test.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from dataclasses import dataclass

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from bridge.delivery.budget import WINDOW_MS, Budget
from bridge.delivery.ratelimit import RateLimiter

T0 = 1_800_000_000_000  # the virtual clock's start (ms)
GENERAL_PER_MINUTE = 10_000  # the general bucket never binds here: the bulk bucket is the story
_names = itertools.count()


@dataclass
class Portal:
    """Rentix's bulk bucket: fixed windows opened by their first request."""

    limit: int
    start: int | None = None
    count: int = 0
    refused: int = 0

    def take(self, now: int, answered: int) -> Budget:
        """Count a bulk arriving at ``now``; what its answer at ``answered`` reports."""
        if self.start is None or now >= self.start + WINDOW_MS:
            self.start, self.count = now, 0
        if self.count >= self.limit:
            self.refused += 1
        else:
            self.count += 1
        reset = math.ceil((self.start + WINDOW_MS) / 1000) * 1000  # header: whole seconds
        return Budget(self.limit, self.limit - self.count, reset, answered)


@dataclass(frozen=True)
class Run:
    sends: list[int]
    refused: int


async def drive(redis_url: str, per_minute: int, burst: int, limit: int, compose_ms: int,
                answer_ms: int, bulks: int) -> Run:
    """``bulks`` bulks sent back to back, each waiting as ``Sender._rate_slot`` does."""
    target = f"pacing-{next(_names)}"
    client = Redis.from_url(redis_url)
    try:
        limiter, portal = RateLimiter(client), Portal(limit)
        now, sends = T0, []
        reported: Budget | None = None
        for _ in range(bulks):
            while True:
                paced = reported.paced_until(now, 60_000 / per_minute) if reported else None
                if paced is not None:
                    now = paced
                    continue
                wait = await limiter.acquire_bulk(target, GENERAL_PER_MINUTE, per_minute, now,
                                                  burst)
                if not wait:
                    break
                now += wait
            sent = now + compose_ms  # a bulk is composed once its slot is free
            now = sent + answer_ms
            sends.append(sent)
            reported = portal.take(sent, now)
        return Run(sends, portal.refused)
    finally:
        await client.aclose()


def widest_gap(run: Run) -> int:
    return max(b - a for a, b in itertools.pairwise(run.sends))


def test_paced_bulks_are_never_refused_and_never_stop_for_long(
    redis_url: str, model_profile: hypothesis_settings
) -> None:
    @hypothesis_settings(model_profile, max_examples=model_profile.max_examples * 3)
    @given(per_minute=st.integers(1, 60), burst=st.integers(1, 8),
           over=st.integers(-5, 5), compose_ms=st.integers(0, 400),
           answer_ms=st.integers(0, 200), windows=st.integers(2, 4))
    def check(per_minute: int, burst: int, over: int, compose_ms: int, answer_ms: int,
              windows: int) -> None:
        limit = max(1, per_minute + over)
        run = asyncio.run(drive(redis_url, per_minute, burst, limit, compose_ms, answer_ms,
                                bulks=windows * max(limit, per_minute)))
        assert run.refused == 0
        spacing = max(60_000 / per_minute, WINDOW_MS / limit)
        assert widest_gap(run) <= 2 * spacing + compose_ms + answer_ms + 1_000

    check()


def test_28_a_minute_against_windows_of_30_leaves_no_hole(redis_url: str) -> None:
    """The default settings against the documented limit: with the burst of 5, no pacing let
    33 go in the first window, so the bulks stopped ~7 s before it reset."""
    run = asyncio.run(drive(redis_url, per_minute=28, burst=5, limit=30, compose_ms=150,
                            answer_ms=10, bulks=100))
    assert run.refused == 0
    assert widest_gap(run) < 2_600  # one spacing (2,143 ms), the compose time and rounding
    in_first_window = sum(s < run.sends[0] + WINDOW_MS for s in run.sends)
    assert in_first_window >= 29  # the window's spare is spent, not left
