"""A compacted tombstone outlives its expiry while an event received before it still waits in
the inbox (issue 25): an event stale when received is stale whenever it is folded, and one
received after the expiry is judged without the tombstone, as it always was.

The real ingest scripts, the real compaction script under a lease, and the workers' scheduler;
receipt times are given explicitly, as the webhook stamps them, around the present.
"""

from __future__ import annotations

import msgspec
import orjson
import pytest
import redis
import redis.asyncio as aioredis
from arq.connections import ArqRedis

from bridge import constants as k
from bridge import stories
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.desired import read_listings
from bridge.delivery.tombstones import Tombstones
from bridge.ingest.inbox import PURGE_TOMBSTONES, FoldSettings, fold_now
from bridge.ingest.store import accept_now
from bridge.settings import RetentionSettings, Settings
from tests.support import turns
from tests.support.servers import wait_until

DAY = RetentionSettings(horizon_days=1)
SHORT = RetentionSettings(horizon_days=2 / 86_400)  # 2 s: waited out within a test


class Ingest:
    """The webhook's script (``accept``: into the inbox) and the workers' fold, apart."""

    def __init__(self, r: redis.Redis, settings: Settings, retention: RetentionSettings) -> None:
        self.r = r
        self.ttl = settings.webhook.dedupe_ttl_seconds
        self.settings = FoldSettings.of(settings, retention)

    def accept(self, webhook_id: str, received: int, kind: str, occurred: int, ref: str,
               version: int = -1, stored: int = 1, **body: object) -> None:
        text = "" if kind == "d" else orjson.dumps({"external_ref": ref, **body}).decode()
        entry = msgspec.msgpack.encode([str(x) for x in (webhook_id, received, kind, "g1",
                                                         occurred, ref, version, text)])
        assert accept_now(self.r, webhook_id, received, entry, self.ttl) == stored

    def fold(self, max_events: int = 100) -> list[int]:
        """One fold call: [events folded, listings applied, events left]."""
        folded = fold_now(self.r, self.settings, max_events, 1_000)
        return [folded.events, folded.applied, folded.left]



async def compact(r: redis.Redis, client: aioredis.Redis, retention: RetentionSettings,
                  ref: str) -> None:
    """What a flush does once every target accepted the deletion, under its lease."""
    r.set(ks().LEASE + "g1", "token-1")
    listing = (await read_listings(client, [ref]))[ref]
    assert listing.deleted
    done = await Tombstones(client, retention.horizon_ms).compact(
        "g1", "token-1", now_ms(), [listing], [], [])
    assert done == 1
    r.delete(ks().LEASE + "g1")


def redis_clock_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def results(r: redis.Redis, ref: str) -> list[str]:
    """The listing's story, oldest first: each event's result."""
    return [stories.unpack(x)["result"] for x in reversed(r.lrange(ks().TRACE + ref, 0, -1))]


async def deleted_and_compacted(ingest: Ingest, r: redis.Redis, client: aioredis.Redis,
                                retention: RetentionSettings, deleted_at: int) -> int:
    """apt-1 created, deleted at ``deleted_at`` (version 2) and compacted; its expiry."""
    ingest.accept("wh-1", deleted_at - 1_000, "u", deleted_at - 1_000, "apt-1", 1, rooms=1)
    ingest.accept("wh-2", deleted_at, "d", deleted_at, "apt-1", 2)
    assert ingest.fold()[:2] == [2, 2]
    await compact(r, client, retention, "apt-1")
    return deleted_at + retention.horizon_ms


async def test_the_compaction_lists_the_tombstone_with_its_expiry_and_sets_no_ttl(
    r: redis.Redis, settings: Settings, client: aioredis.Redis
) -> None:
    ingest = Ingest(r, settings, DAY)
    # Even one already expired: an event received before its expiry may still wait.
    for deleted_at in (now_ms(), now_ms() - DAY.horizon_ms - 60_000):
        expires = await deleted_and_compacted(ingest, r, client, DAY, deleted_at)
        assert r.zscore(ks().TOMBSTONES, "apt-1") == expires
        assert r.pttl(ks().LISTING + "apt-1") == -1, "no TTL: the fold decides when it goes"
        assert r.hgetall(ks().LISTING + "apt-1") == {
            "g": "g1", "v": "2", "t": str(deleted_at), "d": "1", k.LISTING_SOURCES: "wh-2"}
        r.flushdb()


async def test_a_tombstone_whose_horizon_passed_while_an_older_event_waited_still_refuses_it(
    r: redis.Redis, settings: Settings, client: aioredis.Redis
) -> None:
    ingest = Ingest(r, settings, SHORT)
    deleted_at = now_ms()
    expires = await deleted_and_compacted(ingest, r, client, SHORT, deleted_at)
    # A late update from before the deletion (older version and time), received while the
    # tombstone lived: stale at receipt. No worker folds it before the horizon passed.
    ingest.accept("wh-3", deleted_at + 100, "u", deleted_at - 500, "apt-1", 1, rooms=9)
    wait_until(lambda: redis_clock_ms(r) > expires + k.TOMBSTONE_GRACE_MS, timeout=15,
               what="the tombstone's horizon to pass, by Redis's clock")

    assert ingest.fold() == [1, 0, 0]

    assert results(r, "apt-1") == ["applied", "applied", "stale"]
    assert not r.exists(ks().BODY + "apt-1") and not r.sismember(ks().MEMBERS + "g1", "apt-1")
    # Nothing received before the expiry waits any more: the tombstone went with that fold.
    assert not r.exists(ks().LISTING + "apt-1")
    assert r.zscore(ks().TOMBSTONES, "apt-1") is None


async def test_an_event_received_after_the_expiry_is_judged_without_the_tombstone(
    r: redis.Redis, settings: Settings, client: aioredis.Redis
) -> None:
    """Both waited in the inbox past the expiry: the one received before it is stale, the one
    received after it (an older version, but newer than the horizon) brings the listing back,
    as it would have had it been folded at once."""
    ingest = Ingest(r, settings, DAY)
    deleted_at = now_ms() - DAY.horizon_ms - 60_000
    expires = await deleted_and_compacted(ingest, r, client, DAY, deleted_at)
    ingest.accept("wh-3", expires - 10_000, "u", deleted_at - 500, "apt-1", 1, rooms=9)
    ingest.accept("wh-4", expires + 10_000, "u", deleted_at + 20_000, "apt-1", 1, rooms=7)

    assert ingest.fold() == [2, 1, 0]

    assert results(r, "apt-1")[-2:] == ["stale", "applied"]
    assert r.hget(ks().LISTING + "apt-1", "d") == "0"
    assert orjson.loads(r.get(ks().BODY + "apt-1")) == {"external_ref": "apt-1", "rooms": 7}
    assert r.zscore(ks().TOMBSTONES, "apt-1") is None and r.pttl(ks().LISTING + "apt-1") == -1


async def test_the_tombstone_stays_while_the_inbox_holds_an_event_received_before_its_expiry(
    r: redis.Redis, settings: Settings, client: aioredis.Redis
) -> None:
    ingest = Ingest(r, settings, DAY)
    deleted_at = now_ms() - DAY.horizon_ms - 60_000
    expires = await deleted_and_compacted(ingest, r, client, DAY, deleted_at)
    ingest.accept("wh-3", expires - 5_000, "u", deleted_at, "apt-9", rooms=1)
    ingest.accept("wh-4", expires - 1_000, "u", deleted_at - 500, "apt-1", 1, rooms=9)

    assert ingest.fold(max_events=1) == [1, 1, 1]
    assert r.zscore(ks().TOMBSTONES, "apt-1") == expires, "wh-4, received before it, waits"
    assert r.hget(ks().LISTING + "apt-1", "d") == "1"

    assert ingest.fold() == [1, 0, 0]
    assert results(r, "apt-1")[-1] == "stale"
    assert not r.exists(ks().LISTING + "apt-1") and not r.zcard(ks().TOMBSTONES)


@pytest.mark.parametrize("webhook_id", ["wh-1", "msg_" + "x" * 40, "m" * 300])
@pytest.mark.parametrize("redelivered", [False, True])
@pytest.mark.parametrize(("after", "goes"), [(-5_000, False), (5_000, True)])
def test_the_receipt_of_the_oldest_waiting_entry_is_read_whatever_its_shape(
    r: redis.Redis, settings: Settings, webhook_id: str, redelivered: bool, after: int,
    goes: bool
) -> None:
    """The fold reads the receipt time from an entry's first bytes: ids of every msgpack string
    size, and a redelivery's marked entry. The tombstone goes only if that event was received
    after its expiry (and the grace)."""
    ingest = Ingest(r, settings, DAY)
    expires = now_ms() - 60_000
    r.hset(ks().LISTING + "apt-1", mapping={"g": "g1", "v": "1", "t": "1", "d": "1"})
    r.zadd(ks().TOMBSTONES, {"apt-1": expires})
    received = expires + k.TOMBSTONE_GRACE_MS + after
    first = "wh-0" if not redelivered else webhook_id
    ingest.accept(first, expires - 10_000, "u", expires - 10_000, "apt-2")
    ingest.accept(webhook_id, received, "u", received, "apt-3", stored=0 if redelivered else 1)

    assert ingest.fold(max_events=1) == [1, 1, 1]

    assert (r.zscore(ks().TOMBSTONES, "apt-1") is None) is goes
    assert (not r.exists(ks().LISTING + "apt-1")) is goes


def test_a_call_removes_a_bounded_number_and_only_tombstones(
    r: redis.Redis, settings: Settings
) -> None:
    ingest = Ingest(r, settings, DAY)
    past = now_ms() - 60_000
    refs = [f"apt-{n}" for n in range(PURGE_TOMBSTONES + 5)]
    for ref in refs:  # as the compaction leaves them
        r.hset(ks().LISTING + ref, mapping={"g": "g1", "v": "-1", "t": str(past - DAY.horizon_ms),
                                         "d": "1"})
    r.zadd(ks().TOMBSTONES, dict.fromkeys(refs, past))
    # Listed, but a live listing (it has a receipt time): only its entry goes.
    r.hset(ks().LISTING + refs[0], "at", str(past))

    assert ingest.fold() == [0, 0, 0]
    assert r.zcard(ks().TOMBSTONES) == 5
    assert ingest.fold() == [0, 0, 0]
    assert not r.zcard(ks().TOMBSTONES)
    assert r.keys(ks().LISTING + "*") == [ks().LISTING + refs[0]]


async def test_the_scheduler_removes_expired_tombstones_when_nothing_arrives(
    r: redis.Redis, redis_url: str, settings: Settings
) -> None:
    now = now_ms()
    for ref, expires in (("gone", now - 60_000), ("kept", now + 60_000)):
        r.hset(ks().LISTING + ref, mapping={"g": "g1", "v": "1", "t": "1", "d": "1"})
        r.zadd(ks().TOMBSTONES, {ref: expires})
    async with ArqRedis.from_url(redis_url) as arq:
        # A worker's start gives every tenant a turn; the tombstone's expiry brings the next.
        await turns.woken_tick(turns.scheduler(arq, settings))

    assert not r.exists(ks().INBOX)
    assert r.keys(ks().LISTING + "*") == [ks().LISTING + "kept"]
    assert r.zrange(ks().TOMBSTONES, 0, -1) == ["kept"]
