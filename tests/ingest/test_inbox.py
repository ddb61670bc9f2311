"""The inbox: what the webhook stores is folded by the workers into exactly the state, stories
and counters that folding each event on its own gives, however the folds are batched, and the
workers' ``Inbox`` drains it; against the test Redis."""

from __future__ import annotations

import random
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.ingest import store
from bridge.ingest.events import ValidEvent
from bridge.ingest.inbox import FoldSettings, Inbox, fold_now
from bridge.settings import Settings

# The present, as Redis's clock reads it too: its expiries are judged against it.
T0 = now_ms()
KINDS = {"u": "listing.updated", "d": "listing.deleted", "s": "group.snapshot"}


def events(seed: int, count: int) -> list[tuple[str, int, ValidEvent]]:
    """(webhook id, received at, event): updates with and without versions, out of order,
    deletions, group moves, snapshots, and redeliveries of earlier ids."""
    rng = random.Random(seed)
    refs, groups = [f"apt-{n}" for n in range(12)], ["north", "south", "east"]
    out: list[tuple[str, int, ValidEvent]] = []
    for n in range(count):
        at = T0 + n * 10 + rng.randrange(-40, 40)  # occurred_at out of order too
        roll = rng.random()
        if out and roll < 0.08:
            out.append(rng.choice(out))  # a redelivery
            continue
        group = rng.choice(groups)
        if roll < 0.2:
            listings = [(ref, rng.choice([-1, rng.randrange(50)]),
                         orjson.dumps({"external_ref": ref, "n": n}))
                        for ref in rng.sample(refs, rng.randrange(0, 5))]
            event = ValidEvent(KINDS["s"], group, at, listings)
        elif roll < 0.35:
            event = ValidEvent(KINDS["d"], group, at,
                               [(rng.choice(refs), rng.choice([-1, rng.randrange(50)]), b"")])
        else:
            ref = rng.choice(refs)
            event = ValidEvent(KINDS["u"], group, at, [
                (ref, rng.choice([-1, rng.randrange(50)]),
                 orjson.dumps({"external_ref": ref, "n": n, "city": "Chișinău"}))])
        out.append((f"wh-{n}", T0 + n * 10, event))
    return out


def accept(r: redis.Redis, settings: Settings,
           stream: list[tuple[str, int, ValidEvent]]) -> list[int]:
    return [store.accept_now(r, webhook_id, now, store.entry(webhook_id, now, event),
                             settings.webhook.dedupe_ttl_seconds)
            for webhook_id, now, event in stream]


def fold(r: redis.Redis, settings: Settings, max_events: int, max_listings: int) -> list[int]:
    """Fold the whole inbox in calls of at most this size; each call's events folded."""
    calls = []
    while True:
        folded = fold_now(r, FoldSettings.of(settings), max_events, max_listings)
        calls.append(folded.events)
        if not folded.left:
            return calls


def everything(r: redis.Redis) -> dict[str, Any]:
    """Every key's value and whether it expires."""
    read = {"string": r.get, "hash": r.hgetall, "set": r.smembers, "list":
            lambda key: r.lrange(key, 0, -1), "zset": lambda key: r.zrange(key, 0, -1,
                                                                           withscores=True)}
    return {key: (read[r.type(key)](key), r.pttl(key) > 0) for key in r.keys("*")}


def test_batches_fold_exactly_as_events_one_at_a_time(r: redis.Redis, settings: Settings
                                                      ) -> None:
    for seed in range(3):
        stream = events(seed, 300)
        answers = accept(r, settings, stream)
        assert r.llen(ks().INBOX) == len(stream)
        assert fold(r, settings, 1, 1) == [1] * len(stream)
        one_by_one = everything(r)
        r.flushdb()

        assert accept(r, settings, stream) == answers
        calls = fold(r, settings, 100, 25)
        assert sum(calls) == len(stream) and max(calls) > 1
        assert everything(r) == one_by_one
        assert not r.exists(ks().INBOX)
        r.flushdb()


def test_each_stored_event_counts_once_by_its_outcome_and_every_redelivery_tells_its_story(
    r: redis.Redis, settings: Settings
) -> None:
    stream = events(7, 200)
    answers = accept(r, settings, stream)
    fold(r, settings, 100, 1_000)
    metrics = {field: int(v) for field, v in r.hgetall(ks().METRICS).items()}
    first = answers.count(1)
    assert metrics["webhook_events_total|duplicate"] == answers.count(0) > 0
    assert metrics["webhook_events_total|accepted"] + metrics.get(
        "webhook_events_total|stale", 0) == first
    # Summed over minutes: the stream's receipt times (2 s of them) may straddle a minute.
    stats: dict[str, int] = {}
    for key in r.keys(ks().STATS + "*"):
        for field, value in r.hgetall(key).items():
            stats[field] = stats.get(field, 0) + int(value)
    assert stats["received"] == first and stats["duplicate"] == answers.count(0)
    told = sum(len(e.listings) for e, answer in
               zip((event for _, _, event in stream), answers, strict=True) if answer == 0)
    duplicates = [entry for key in r.keys(ks().TRACE + "*") for entry in r.lrange(key, 0, -1)
                  if entry.endswith(',"d"]')]
    assert len(duplicates) == told


async def test_the_workers_inbox_drains_a_backlog_a_large_snapshot_in_a_call_of_its_own(
    r: redis.Redis, redis_url: str, settings: Settings
) -> None:
    big = ValidEvent("group.snapshot", "big", T0, [
        (f"apt-{n}", 1, orjson.dumps({"external_ref": f"apt-{n}"})) for n in range(1_500)])
    small = [ValidEvent("listing.updated", "g", T0 + n, [(f"x-{n}", 1, b"{}")])
             for n in range(250)]
    stream = [("wh-big", T0, big), *((f"wh-{n}", T0 + n, e) for n, e in enumerate(small))]
    accept(r, settings, stream)
    client = aioredis.Redis.from_url(redis_url)
    try:
        inbox = Inbox(client, settings)
        assert await inbox.waiting() == 251
        alone = await inbox.fold()
        assert (alone.events, alone.applied, alone.left) == (1, 1_500, 250)
        assert await inbox.drain() == 250
        assert await inbox.waiting() == 0
        assert (await inbox.fold()).events == 0  # an empty inbox: a no-op
    finally:
        await client.aclose()
    assert r.scard(ks().MEMBERS + "big") == 1_500 and r.scard(ks().MEMBERS + "g") == 250
