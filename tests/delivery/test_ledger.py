"""The delivery ledger (bridge.delivery.ledger) against the test Redis: what each target
accepted, quarantine and retries, held syncs, backoff, pause and the attempt history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import orjson
import pytest
import redis
from redis.asyncio import Redis

from bridge import constants as k
from bridge.delivery.ledger import Accepted, Attempt, Held, Ledger, Quarantined

AT = 1_800_000_000_000


@pytest.fixture
async def ledger(redis_url: str) -> AsyncIterator[Ledger]:
    client = Redis.from_url(redis_url)
    yield Ledger(client)
    await client.aclose()


def record(digest: str) -> Accepted:
    return Accepted(digest, {"externalId": digest, "n": 1}, AT)


def refusal(digest: str) -> Quarantined:
    return Quarantined(digest, "g", "validation_failed", "refused", "files", AT)


def held(digest: str) -> Held:
    return Held(digest, "it would delete 8 listings", [f"apt-{i}" for i in range(8)], 2, AT)


def attempt(n: int, group: str = "g") -> Attempt:
    return Attempt(at=AT + n, target="rentix", group=group, operation="upsert",
                   listings=[f"apt-{n}"], idempotency_key=f"lb-{n}", outcome="ok", status=200,
                   latency_ms=1.5, attempt=1)


# -- accepted state --

async def test_accepted_records_round_trip_per_target(ledger: Ledger) -> None:
    await ledger.record_accepted("rentix", "apt-1", record("d1"))
    await ledger.record_accepted("rentix", "apt-2", record("d2"))
    await ledger.record_accepted("rentix", "apt-1", record("d3"))  # the newer acceptance wins
    assert await ledger.accepted("rentix", None) == {"apt-1": record("d3"), "apt-2": record("d2")}
    assert await ledger.accepted("rentix", None, ["apt-2", "apt-9"]) == {"apt-2": record("d2")}
    assert await ledger.accepted("rentix", None, []) == {}
    assert await ledger.accepted("other", None) == {}


async def test_record_sync_replaces_the_groups_records_and_clears_hold_and_release(
    ledger: Ledger,
) -> None:
    await ledger.record_sync("travtus", "g", "s1", {"apt-1": record("d1"), "apt-2": record("d2")})
    await ledger.record_sync("travtus", "h", "s9", {"apt-9": record("d9")})
    await ledger.hold("travtus", "g", held("s2"))
    await ledger.hold("travtus", "h", held("s8"))
    await ledger.release("travtus", "g")

    await ledger.record_sync("travtus", "g", "s2", {"apt-2": record("d2"), "apt-3": record("d3")})

    assert await ledger.accepted("travtus", "g") == {"apt-2": record("d2"), "apt-3": record("d3")}
    assert await ledger.sync_digest("travtus", "g") == "s2"
    assert await ledger.released_digest("travtus", "g") is None
    assert list(await ledger.held("travtus")) == ["h"]  # another group's hold stays
    assert await ledger.accepted("travtus", "h") == {"apt-9": record("d9")}


async def test_an_empty_accepted_sync_leaves_the_group_empty(ledger: Ledger) -> None:
    await ledger.record_sync("travtus", "g", "s1", {"apt-1": record("d1")})
    await ledger.record_sync("travtus", "g", "s2", {})
    assert await ledger.accepted("travtus", "g") == {}
    assert await ledger.sync_digest("travtus", "g") == "s2"


# -- quarantine --

async def test_quarantine_round_trip(ledger: Ledger) -> None:
    await ledger.quarantine("rentix", "apt-1", refusal("d1"))
    await ledger.quarantine("rentix", "apt-2", refusal("d2"))
    assert await ledger.quarantined("rentix") == {"apt-1": refusal("d1"), "apt-2": refusal("d2")}
    assert await ledger.quarantined("rentix", ["apt-2"]) == {"apt-2": refusal("d2")}
    assert await ledger.quarantined("travtus") == {}


async def test_retry_of_a_quarantined_listing_clears_it_and_bumps_its_retry_generation(
    ledger: Ledger,
) -> None:
    await ledger.quarantine("rentix", "apt-1", refusal("d1"))
    await ledger.quarantine("rentix", "apt-2", refusal("d2"))
    assert await ledger.retries("rentix", ["apt-1", "apt-2"]) == {}

    await ledger.retry_quarantined("rentix", ["apt-1"])
    assert list(await ledger.quarantined("rentix")) == ["apt-2"]
    assert await ledger.retries("rentix", ["apt-1", "apt-2"]) == {"apt-1": 1}

    await ledger.quarantine("rentix", "apt-1", refusal("d1"))  # refused again
    await ledger.retry_quarantined("rentix", ["apt-1", "apt-2"])
    assert await ledger.quarantined("rentix") == {}
    assert await ledger.retries("rentix", ["apt-1", "apt-2"]) == {"apt-1": 2, "apt-2": 1}
    assert await ledger.retries("rentix", []) == {}


async def test_release_and_discard_of_quarantined_listings(ledger: Ledger) -> None:
    await ledger.quarantine("rentix", "apt-1", refusal("d1"))
    await ledger.quarantine("rentix", "apt-2", refusal("d2"))

    assert await ledger.discard_quarantine("rentix", ["apt-2", "apt-9"]) == 1
    entry = (await ledger.quarantined("rentix"))["apt-2"]
    assert entry.discarded and entry.digest == "d2"  # still skipped, off the problem list

    assert await ledger.release_quarantine("rentix", ["apt-1", "apt-9"]) == 1
    assert await ledger.release_quarantine("rentix", []) == 0
    assert list(await ledger.quarantined("rentix")) == ["apt-2"]
    assert await ledger.retries("rentix", ["apt-1"]) == {}  # a release is no new intent


# -- held syncs --

async def test_releasing_a_held_sync_marks_exactly_that_content_for_sending(
    ledger: Ledger,
) -> None:
    await ledger.hold("travtus", "g", held("s1"))
    assert await ledger.held("travtus") == {"g": held("s1")}
    assert await ledger.release("travtus", "g") == held("s1")
    assert await ledger.released_digest("travtus", "g") == "s1"
    assert await ledger.held("travtus") == {"g": held("s1")}  # until the sync is accepted
    assert await ledger.discarded_digest("travtus", "g") is None


async def test_discarding_a_held_sync_refuses_that_content_and_unholds_it(
    ledger: Ledger,
) -> None:
    await ledger.hold("travtus", "g", held("s1"))
    assert await ledger.discard("travtus", "g") == held("s1")
    assert await ledger.discarded_digest("travtus", "g") == "s1"
    assert await ledger.held("travtus") == {}
    assert await ledger.released_digest("travtus", "g") is None


async def test_release_or_discard_of_a_group_not_held_changes_nothing(ledger: Ledger) -> None:
    assert await ledger.release("travtus", "g") is None
    assert await ledger.discard("travtus", "g") is None
    assert await ledger.released_digest("travtus", "g") is None
    assert await ledger.discarded_digest("travtus", "g") is None


async def test_unhold_removes_only_that_group(ledger: Ledger) -> None:
    await ledger.hold("travtus", "g", held("s1"))
    await ledger.hold("travtus", "h", held("s2"))
    await ledger.unhold("travtus", "g")
    assert await ledger.held("travtus") == {"h": held("s2")}


# -- backoff and target state --

async def test_backoff_per_target_and_group(ledger: Ledger) -> None:
    assert await ledger.backoff("rentix", "g") == (0, 0)
    await ledger.set_backoff("rentix", "g", 3, AT + 4000)
    assert await ledger.backoff("rentix", "g") == (3, AT + 4000)
    assert await ledger.backoff("rentix", "h") == (0, 0)
    assert await ledger.backoff("travtus", "g") == (0, 0)
    await ledger.clear_backoff("rentix", "g")
    assert await ledger.backoff("rentix", "g") == (0, 0)


async def test_resume_clears_the_pause_and_makes_every_group_due(ledger: Ledger,
                                                                 r: redis.Redis) -> None:
    r.sadd(k.GROUPS, "g", "h")
    r.zadd(k.DUE, {"h": AT * 2})  # due far in the future: resume brings it forward
    await ledger.pause("rentix", "invalid credentials")
    await ledger.block_until("rentix", AT + 60_000, "429")
    state = await ledger.target_state("rentix")
    assert state["paused"] == "invalid credentials" and int(state["paused_at"]) > 0
    assert state["blocked_until"] == str(AT + 60_000)

    await ledger.resume("rentix")

    state = await ledger.target_state("rentix")
    assert not {"paused", "paused_at", "blocked_until"} & set(state)
    assert state["last_error"] == "429"  # kept for the operator
    due = dict(cast(list[tuple[str, float]], r.zrange(k.DUE, 0, -1, withscores=True)))
    assert set(due) == {"g", "h"} and max(due.values()) < AT * 2
    assert r.hget(f"{k.PENDING}g", "seq") == "1"  # a flush running meanwhile keeps it due


async def test_note_sets_target_fields(ledger: Ledger) -> None:
    await ledger.note("travtus", last_error="timeout", last_error_at=AT)
    assert await ledger.target_state("travtus") == {"last_error": "timeout",
                                                    "last_error_at": str(AT)}


# -- history and figures --

async def test_attempts_are_kept_newest_first_overall_and_per_group(ledger: Ledger) -> None:
    for n in range(3):
        await ledger.record_attempt(attempt(n, group="g" if n < 2 else "h"), [10 * n])
    assert await ledger.history() == [attempt(2, "h"), attempt(1), attempt(0)]
    assert await ledger.history("g") == [attempt(1), attempt(0)]
    assert await ledger.history(limit=1) == [attempt(2, "h")]


async def test_record_attempt_caps_the_history_and_latencies(ledger: Ledger,
                                                             r: redis.Redis) -> None:
    filler = orjson.dumps(attempt(-1)).decode()
    r.rpush(k.HISTORY, *[filler] * k.HISTORY_MAXLEN)
    r.rpush(f"{k.HISTORY}:g", *[filler] * k.GROUP_HISTORY_MAXLEN)
    r.rpush(k.LATENCY, *[0] * k.LATENCY_MAXLEN)

    await ledger.record_attempt(attempt(7), [70, 71])

    assert r.llen(k.HISTORY) == k.HISTORY_MAXLEN
    assert r.llen(f"{k.HISTORY}:g") == k.GROUP_HISTORY_MAXLEN
    assert r.llen(k.LATENCY) == k.LATENCY_MAXLEN
    assert (await ledger.history(limit=1)) == [attempt(7)]
    assert (await ledger.history("g", limit=1)) == [attempt(7)]
    assert r.lrange(k.LATENCY, 0, 1) == ["71", "70"]


async def test_record_attempt_counts_calls_and_outcomes_per_minute(ledger: Ledger,
                                                                   r: redis.Redis) -> None:
    await ledger.record_attempt(attempt(1), [])
    await ledger.record_attempt(attempt(2), [])
    stats = f"{k.STATS}{(AT + 1) // 60_000}"
    assert r.hgetall(stats) == {"calls:rentix": "2", "ok:rentix": "2"}
    assert 0 < cast(int, r.ttl(stats)) <= k.STATS_TTL_S
    assert not r.exists(k.LATENCY)  # no latencies, nothing pushed
