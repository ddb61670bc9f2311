"""The delivery ledger (bridge.delivery.ledger) against the test Redis: what each target
accepted, standing intents, quarantine and retries, held syncs pinned to the reviewed digest,
backoff, pause, the attempt history, and a flush's ledger fenced by its lease."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import orjson
import pytest
import redis
from redis.asyncio import Redis

from bridge import constants as k
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.claims import Flushes, Lease, LeaseLost
from bridge.delivery.idempotency import Intent
from bridge.delivery.ledger import (
    Accepted,
    Attempt,
    Held,
    HeldChanged,
    Ledger,
    Quarantined,
    sync_scope,
)
from bridge.settings import DebounceSettings
from tests.support.servers import wait_until

AT = 1_800_000_000_000


@pytest.fixture
async def ledger(redis_url: str) -> AsyncIterator[Ledger]:
    client = Redis.from_url(redis_url)
    yield Ledger(client)
    await client.aclose()


def record(digest: str) -> Accepted:
    return Accepted(digest, {"externalId": digest, "n": 1}, AT)


def kept(digest: str) -> Accepted:
    """A per-listing target's record as the ledger keeps it."""
    return Accepted(digest, None, AT)


def refusal(digest: str) -> Quarantined:
    return Quarantined(digest, "g", "validation_failed", "refused", "files", AT)


def held(digest: str) -> Held:
    return Held(digest, "it would delete 8 listings", [f"apt-{i}" for i in range(8)], 2, AT)


def intent(digest: str, base: str = "") -> Intent:
    return Intent(digest, base, f"lb-key-{digest}")


def contents(r: redis.Redis) -> dict[str, bytes | None]:
    """Every key and its serialized value: equal snapshots mean nothing was written."""
    return {key: cast("bytes | None", r.dump(key)) for key in cast(list[str], r.keys("*"))}


def attempt(n: int, group: str = "g") -> Attempt:
    return Attempt(at=AT + n, target="rentix", group=group, operation="upsert",
                   listings=[f"apt-{n}"], idempotency_key=f"lb-{n}", outcome="ok", status=200,
                   latency_ms=1.5, attempt=1)


# -- accepted state --

async def test_accepted_records_round_trip_per_target(ledger: Ledger) -> None:
    await ledger.record_accepted("rentix", "apt-1", record("d1"))
    await ledger.record_accepted("rentix", "apt-2", record("d2"))
    await ledger.record_accepted("rentix", "apt-1", record("d3"))  # the newer acceptance wins
    # A per-listing target's record keeps the digest and time, not the payload.
    assert await ledger.accepted("rentix", None) == {"apt-1": kept("d3"), "apt-2": kept("d2")}
    assert await ledger.accepted("rentix", None, ["apt-2", "apt-9"]) == {"apt-2": kept("d2")}
    assert await ledger.accepted("rentix", None, []) == {}
    assert await ledger.accepted("other", None) == {}


async def test_record_sync_replaces_the_groups_records_and_clears_hold_and_release(
    ledger: Ledger,
) -> None:
    await ledger.record_sync("travtus", "g", "s1", {"apt-1": record("d1"), "apt-2": record("d2")},
                             ["apt-1", "apt-2"])
    await ledger.record_sync("travtus", "h", "s9", {"apt-9": record("d9")}, ["apt-9"])
    await ledger.hold("travtus", "g", held("s2"))
    await ledger.hold("travtus", "h", held("s8"))
    await ledger.release("travtus", "g", "s2")

    await ledger.record_sync("travtus", "g", "s2", {"apt-2": record("d2"), "apt-3": record("d3")},
                             ["apt-3"])

    assert await ledger.accepted("travtus", "g") == {"apt-2": record("d2"), "apt-3": record("d3")}
    assert await ledger.sync_digest("travtus", "g") == "s2"
    assert await ledger.released_digest("travtus", "g") is None
    assert list(await ledger.held("travtus")) == ["h"]  # another group's hold stays
    assert await ledger.accepted("travtus", "h") == {"apt-9": record("d9")}


async def test_an_empty_accepted_sync_leaves_the_group_empty(ledger: Ledger) -> None:
    await ledger.record_sync("travtus", "g", "s1", {"apt-1": record("d1")}, ["apt-1"])
    await ledger.record_sync("travtus", "g", "s2", {}, [])
    assert await ledger.accepted("travtus", "g") == {}
    assert await ledger.sync_digest("travtus", "g") == "s2"


async def test_record_sync_settles_the_sync_intent_and_frees_only_the_fresh_listings(
    ledger: Ledger,
) -> None:
    await ledger.quarantine("travtus", {"apt-1": refusal("d1"), "apt-2": refusal("d2"),
                                        sync_scope("g"): refusal("s0")})
    await ledger.intend("travtus", {sync_scope("g"): intent("s1"), sync_scope("h"): intent("s9")})

    # apt-2 went out in its last accepted version (its new content is refused): still refused.
    await ledger.record_sync("travtus", "g", "s1", {"apt-1": record("d1"), "apt-2": record("d0")},
                             ["apt-1"])

    assert await ledger.intents("travtus", [sync_scope("g"), sync_scope("h")]) == {
        sync_scope("h"): intent("s9")}
    assert list(await ledger.quarantined("travtus")) == ["apt-2"]


# -- intents --

async def test_intents_round_trip_per_target_and_scope(ledger: Ledger) -> None:
    await ledger.intend("rentix", {"apt-1": intent("d1"), "apt-2": intent("d2", base="d0")})
    await ledger.intend("rentix", {"apt-1": intent("d3", base="d1")})  # a new intent replaces
    await ledger.intend("rentix", {})
    assert await ledger.intents("rentix", ["apt-1", "apt-2", "apt-9"]) == {
        "apt-1": intent("d3", base="d1"), "apt-2": intent("d2", base="d0")}
    assert await ledger.intents("rentix", []) == {}
    assert await ledger.intents("travtus", ["apt-1"]) == {}


async def test_record_accepted_settles_the_listings_intent_and_quarantine(ledger: Ledger) -> None:
    await ledger.intend("rentix", {"apt-1": intent("d1"), "apt-2": intent("d2")})
    await ledger.quarantine("rentix", {"apt-1": refusal("d0")})
    await ledger.intend("rentix", {"apt-1": intent("d1")})  # a new write after the refusal

    await ledger.record_accepted("rentix", "apt-1", record("d1"))

    assert await ledger.intents("rentix", ["apt-1", "apt-2"]) == {"apt-2": intent("d2")}
    assert await ledger.quarantined("rentix") == {}


async def test_distrust_leaves_an_intent_no_content_matches(ledger: Ledger) -> None:
    await ledger.intend("rentix", {"apt-1": intent("d1")})
    await ledger.distrust("rentix", "apt-1")
    [standing] = (await ledger.intents("rentix", ["apt-1"])).values()
    assert not standing.matches("d1", "") and not standing.matches("d1", None)
    assert standing.digest != "d1"


# -- quarantine --

async def test_quarantine_round_trip(ledger: Ledger) -> None:
    await ledger.quarantine("rentix", {"apt-1": refusal("d1")})
    await ledger.quarantine("rentix", {"apt-2": refusal("d2")})
    await ledger.quarantine("rentix", {})
    assert await ledger.quarantined("rentix") == {"apt-1": refusal("d1"), "apt-2": refusal("d2")}
    assert await ledger.quarantined("rentix", ["apt-2"]) == {"apt-2": refusal("d2")}
    assert await ledger.quarantined("travtus") == {}


async def test_quarantine_settles_the_refused_intents_and_the_named_ones(ledger: Ledger) -> None:
    await ledger.intend("travtus", {"apt-1": intent("d1"), "apt-2": intent("d2"),
                                    sync_scope("g"): intent("s1"), sync_scope("h"): intent("s2")})

    await ledger.quarantine("travtus", {"apt-1": refusal("d1")}, settled=[sync_scope("g")])

    assert await ledger.intents("travtus", ["apt-1", "apt-2", sync_scope("g"), sync_scope("h")]
                                ) == {"apt-2": intent("d2"), sync_scope("h"): intent("s2")}


async def test_retry_of_a_quarantined_listing_clears_it_and_drops_its_intent(
    ledger: Ledger,
) -> None:
    await ledger.quarantine("rentix", {"apt-1": refusal("d1"), "apt-2": refusal("d2")})
    # An intent recorded again for the refused content, as a flush in doubt leaves it.
    await ledger.intend("rentix", {"apt-1": intent("d1"), "apt-2": intent("d2")})

    await ledger.retry_quarantined("rentix", ["apt-1"])
    assert list(await ledger.quarantined("rentix")) == ["apt-2"]
    # No intent left: the next write of apt-1 gets a new key, never the refused one.
    assert await ledger.intents("rentix", ["apt-1", "apt-2"]) == {"apt-2": intent("d2")}

    await ledger.quarantine("rentix", {"apt-1": refusal("d1")})  # refused again
    await ledger.retry_quarantined("rentix", ["apt-1", "apt-2"])
    assert await ledger.quarantined("rentix") == {}
    assert await ledger.intents("rentix", ["apt-1", "apt-2"]) == {}


async def test_discard_of_quarantined_listings_keeps_skipping_them_off_the_problem_list(
    ledger: Ledger,
) -> None:
    await ledger.quarantine("rentix", {"apt-1": refusal("d1"), "apt-2": refusal("d2")})

    assert await ledger.discard_quarantine("rentix", ["apt-2", "apt-9"]) == 1
    assert await ledger.discard_quarantine("rentix", []) == 0
    entries = await ledger.quarantined("rentix")
    assert entries["apt-2"].discarded and entries["apt-2"].digest == "d2"  # still skipped
    assert entries["apt-1"] == refusal("d1")


# -- held syncs --

async def test_releasing_a_held_sync_marks_exactly_that_content_for_sending(
    ledger: Ledger,
) -> None:
    await ledger.hold("travtus", "g", held("s1"))
    assert await ledger.held("travtus") == {"g": held("s1")}
    assert await ledger.release("travtus", "g", "s1") == held("s1")
    assert await ledger.released_digest("travtus", "g") == "s1"
    assert await ledger.held("travtus") == {"g": held("s1")}  # until the sync is accepted
    assert await ledger.discarded("travtus", "g") is None


async def test_releasing_another_digest_than_the_held_one_raises_and_changes_nothing(
    ledger: Ledger, r: redis.Redis,
) -> None:
    await ledger.hold("travtus", "g", held("s1"))
    await ledger.hold("travtus", "g", held("s2"))  # the sync changed while the operator looked
    before = contents(r)

    with pytest.raises(HeldChanged) as raised:
        await ledger.release("travtus", "g", "s1")

    assert raised.value.current == held("s2")
    assert contents(r) == before
    assert await ledger.released_digest("travtus", "g") is None


async def test_discarding_a_held_sync_refuses_that_content_at_the_groups_change_count(
    ledger: Ledger, r: redis.Redis,
) -> None:
    r.hset(f"{ks().PENDING}g", "seq", "4")
    await ledger.hold("travtus", "g", held("s1"))
    assert await ledger.discard("travtus", "g", "s1") == held("s1")
    assert await ledger.discarded("travtus", "g") == ("s1", "4")
    assert await ledger.held("travtus") == {}
    assert await ledger.released_digest("travtus", "g") is None

    await ledger.forget_discard("travtus", "g")
    assert await ledger.discarded("travtus", "g") is None


async def test_a_discard_of_a_group_without_changes_records_seq_zero(ledger: Ledger) -> None:
    await ledger.hold("travtus", "g", held("s1"))
    await ledger.discard("travtus", "g", "s1")
    assert await ledger.discarded("travtus", "g") == ("s1", "0")


async def test_discarding_another_digest_than_the_held_one_raises_and_changes_nothing(
    ledger: Ledger, r: redis.Redis,
) -> None:
    await ledger.hold("travtus", "g", held("s2"))
    before = contents(r)

    with pytest.raises(HeldChanged) as raised:
        await ledger.discard("travtus", "g", "s1")

    assert raised.value.current == held("s2")
    assert contents(r) == before
    assert await ledger.held("travtus") == {"g": held("s2")}
    assert await ledger.discarded("travtus", "g") is None


async def test_a_later_hold_drops_an_earlier_release(ledger: Ledger) -> None:
    await ledger.hold("travtus", "g", held("s1"))
    await ledger.hold("travtus", "h", held("s8"))
    await ledger.release("travtus", "g", "s1")
    await ledger.release("travtus", "h", "s8")

    await ledger.hold("travtus", "g", held("s2"))

    assert await ledger.released_digest("travtus", "g") is None  # s2 needs its own review
    assert await ledger.released_digest("travtus", "h") == "s8"


async def test_a_held_sync_keeps_its_deletion_causes(ledger: Ledger) -> None:
    entry = held("s1")
    entry.causes = [{"ref": "apt-1", "cause": "explicit", "reason": "deleted in the CRM"}]
    await ledger.hold("travtus", "g", entry)
    assert (await ledger.held("travtus"))["g"].causes == entry.causes


async def test_release_or_discard_of_a_group_not_held_changes_nothing(
    ledger: Ledger, r: redis.Redis,
) -> None:
    assert await ledger.release("travtus", "g", "s1") is None
    assert await ledger.discard("travtus", "g", "s1") is None
    assert contents(r) == {}


async def test_unhold_removes_only_that_group(ledger: Ledger) -> None:
    await ledger.hold("travtus", "g", held("s1"))
    await ledger.hold("travtus", "h", held("s2"))
    await ledger.unhold("travtus", "g")
    assert await ledger.held("travtus") == {"h": held("s2")}


# -- a flush's ledger, fenced by its lease --

async def test_a_fenced_ledger_writes_nothing_once_another_flush_claimed_the_group(
    ledger: Ledger, r: redis.Redis,
) -> None:
    flushes = Flushes(ledger.redis, lease_ms=1_000, debounce=DebounceSettings())
    first = await flushes.claim("g", now_ms())
    assert first is not None
    fenced = ledger.fenced(Lease(flushes, first, flushes.lease_ms))
    await fenced.record_accepted("rentix", "apt-1", record("d1"))  # holds the group: written
    assert await ledger.accepted("rentix", None) == {"apt-1": kept("d1")}

    # This flush froze past its lease; another claimed the group.
    wait_until(lambda: cast(int, r.pttl(f"{ks().LEASE}g")) < 0, timeout=5,
               what="the lease to lapse")
    second = await flushes.claim("g", now_ms())
    assert second is not None and second.token != first.token
    before = contents(r)

    with pytest.raises(LeaseLost):
        await fenced.record_accepted("rentix", "apt-1", record("d2"))
    with pytest.raises(LeaseLost):
        await fenced.intend("rentix", {"apt-2": intent("d2")})
    with pytest.raises(LeaseLost):
        await fenced.record_sync("travtus", "g", "s1", {"apt-1": record("d2")}, ["apt-1"])

    assert contents(r) == before
    assert await ledger.accepted("rentix", None) == {"apt-1": kept("d1")}
    # The new flush's own ledger writes.
    await ledger.fenced(Lease(flushes, second, flushes.lease_ms)).record_accepted(
        "rentix", "apt-1", record("d3"))
    assert await ledger.accepted("rentix", None) == {"apt-1": kept("d3")}


async def test_a_fenced_ledger_applies_all_of_a_writes_commands_together(
    ledger: Ledger, r: redis.Redis,
) -> None:
    flushes = Flushes(ledger.redis, lease_ms=10_000, debounce=DebounceSettings())
    claim = await flushes.claim("g", now_ms())
    assert claim is not None
    fenced = ledger.fenced(Lease(flushes, claim, flushes.lease_ms))
    await fenced.intend("rentix", {"apt-1": intent("d1")})
    await fenced.quarantine("rentix", {"apt-1": refusal("d0")})

    await fenced.record_accepted("rentix", "apt-1", record("d1"))

    assert await ledger.accepted("rentix", None) == {"apt-1": kept("d1")}
    assert await ledger.intents("rentix", ["apt-1"]) == {}
    assert await ledger.quarantined("rentix") == {}


async def test_a_fenced_ledger_records_an_accepted_sync_of_a_large_group_whole(
    ledger: Ledger,
) -> None:
    # 600 listings make one HSET of 1,200 arguments, which the fence splits for Lua's unpack().
    flushes = Flushes(ledger.redis, lease_ms=10_000, debounce=DebounceSettings())
    claim = await flushes.claim("g", now_ms())
    assert claim is not None
    fenced = ledger.fenced(Lease(flushes, claim, flushes.lease_ms))
    await ledger.record_sync("travtus", "g", "s1", {"apt-0": record("d0")}, ["apt-0"])
    records = {f"apt-{i}": record(f"d{i}") for i in range(600)}

    await fenced.record_sync("travtus", "g", "s2", records, list(records))

    assert await ledger.accepted("travtus", "g") == records
    assert await ledger.sync_digest("travtus", "g") == "s2"


# -- backoff and target state --

async def test_backoff_per_target_and_group(ledger: Ledger) -> None:
    assert await ledger.backoff("rentix", "g") == (0, 0)
    await ledger.set_backoff("rentix", "g", 3, AT + 4000, "timeout")
    assert await ledger.backoff("rentix", "g") == (3, AT + 4000)
    assert await ledger.backoff("rentix", "h") == (0, 0)
    assert await ledger.backoff("travtus", "g") == (0, 0)
    state = await ledger.target_state("rentix")
    assert state["last_error"] == "timeout" and int(state["last_error_at"]) > 0
    await ledger.clear_backoff("rentix", "g")
    assert await ledger.backoff("rentix", "g") == (0, 0)


async def test_resume_clears_the_pause_and_makes_every_group_due(ledger: Ledger,
                                                                 r: redis.Redis) -> None:
    r.sadd(ks().GROUPS, "g", "h")
    r.zadd(ks().DUE, {"h": AT * 2})  # due far in the future: resume brings it forward
    await ledger.pause("rentix", "invalid credentials")
    await ledger.block_until("rentix", AT + 60_000, "429")
    state = await ledger.target_state("rentix")
    assert state["paused"] == "invalid credentials" and int(state["paused_at"]) > 0
    assert state["blocked_until"] == str(AT + 60_000)

    await ledger.resume("rentix")

    state = await ledger.target_state("rentix")
    assert not {"paused", "paused_at", "blocked_until"} & set(state)
    assert state["last_error"] == "429"  # kept for the operator
    due = dict(cast(list[tuple[str, float]], r.zrange(ks().DUE, 0, -1, withscores=True)))
    assert set(due) == {"g", "h"} and max(due.values()) < AT * 2
    assert r.hget(f"{ks().PENDING}g", "seq") == "1"  # a flush running meanwhile keeps it due


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
    r.rpush(ks().HISTORY, *[filler] * k.HISTORY_MAXLEN)
    r.rpush(f"{ks().HISTORY}:g", *[filler] * k.GROUP_HISTORY_MAXLEN)
    r.rpush(ks().LATENCY, *[0] * k.LATENCY_MAXLEN)

    await ledger.record_attempt(attempt(7), [70, 71])

    assert r.llen(ks().HISTORY) == k.HISTORY_MAXLEN
    assert r.llen(f"{ks().HISTORY}:g") == k.GROUP_HISTORY_MAXLEN
    assert r.llen(ks().LATENCY) == k.LATENCY_MAXLEN
    assert (await ledger.history(limit=1)) == [attempt(7)]
    assert (await ledger.history("g", limit=1)) == [attempt(7)]
    assert r.lrange(ks().LATENCY, 0, 1) == ["71", "70"]


async def test_record_attempt_counts_calls_and_outcomes_per_minute(ledger: Ledger,
                                                                   r: redis.Redis) -> None:
    await ledger.record_attempt(attempt(1), [])
    await ledger.record_attempt(attempt(2), [])
    stats = f"{ks().STATS}{(AT + 1) // 60_000}"
    assert r.hgetall(stats) == {"calls:rentix": "2", "ok:rentix": "2"}
    assert 0 < cast(int, r.ttl(stats)) <= k.STATS_TTL_S
    assert not r.exists(ks().LATENCY)  # no latencies, nothing pushed


async def test_record_sync_knowing_the_previous_records_writes_only_what_changed(
    ledger: Ledger, r: redis.Redis
) -> None:
    before = {"a": record("d1"), "b": record("d2"), "c": record("d3")}
    await ledger.record_sync("travtus", "g", "s1", before, [])
    after = {"a": before["a"], "b": record("d9"), "d": record("d4")}  # c left, b changed
    r.hset(f"{ks().ACCEPTED}travtus:g", "a", "untouched")  # proves "a" is not written again
    await ledger.record_sync("travtus", "g", "s2", after, ["b", "d"], previous=before)
    held = r.hgetall(f"{ks().ACCEPTED}travtus:g")
    assert set(held) == {"a", "b", "d"} and held["a"] == "untouched"
    del after["a"]
    assert {ref: v for ref, v in (await ledger.accepted("travtus", "g", ["b", "d"])).items()
            } == after
