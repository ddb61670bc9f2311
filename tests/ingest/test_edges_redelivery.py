"""A redelivery after the dedupe window (senders such as Svix retry for days; the window is
72 h) never undoes what another event set since (issue 25). At equal times the later arrival
wins, unless it is an event that already set the listing at that time: the webhook id tells.

The real webhook script and fold; the window's end is its key's real expiry.
"""

from __future__ import annotations

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from bridge import stories
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.desired import read_listings
from bridge.delivery.tombstones import Tombstones
from bridge.settings import Settings
from tests.ingest.test_ordering import desired
from tests.support.ingest import Scripts
from tests.support.servers import wait_until

T0 = now_ms()


class Crm:
    """Events by webhook id, each sent again with its very entry when asked."""

    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.r = r
        self.scripts = Scripts(r, settings)
        self.sent: dict[str, tuple[str, str, int, tuple[str | int, ...]]] = {}
        self.received = T0

    def send(self, webhook_id: str, kind: str, *items: str | int, at: int = T0,
             group: str = "g1") -> list[int]:
        self.sent[webhook_id] = (kind, group, at, items)
        return self._deliver(webhook_id)

    def upsert(self, webhook_id: str, ref: str, version: int = -1, at: int = T0,
               **body: object) -> list[int]:
        return self.send(webhook_id, "u", ref, version,
                         orjson.dumps({"external_ref": ref, **body}).decode(), at=at)

    def delete(self, webhook_id: str, ref: str, version: int = -1, at: int = T0) -> list[int]:
        return self.send(webhook_id, "d", ref, version, "", at=at)

    def snapshot(self, webhook_id: str, *refs: str, at: int = T0) -> list[int]:
        items: list[str | int] = []
        for ref in refs:
            items += [ref, -1, orjson.dumps({"external_ref": ref}).decode()]
        return self.send(webhook_id, "s", *items, at=at)

    def redeliver_after_the_window(self, webhook_id: str) -> list[int]:
        """The same event again, once its dedupe key expired: [stored, listings applied]."""
        self.r.pexpire(ks().SEEN + webhook_id, 1)
        wait_until(lambda: not self.r.exists(ks().SEEN + webhook_id), timeout=5,
                   what="the dedupe window to end")
        return self._deliver(webhook_id)

    def _deliver(self, webhook_id: str) -> list[int]:
        self.received += 1_000  # each delivery arrives later than the one before
        kind, group, at, items = self.sent[webhook_id]
        return self.scripts(webhook_id, self.received, kind, group, at, *items)


@pytest.fixture
def crm(r: redis.Redis, settings: Settings) -> Crm:
    return Crm(r, settings)


def body(r: redis.Redis, ref: str) -> object:
    listing = desired(r, ref)
    return None if listing.deleted else listing.body


def last_result(r: redis.Redis, ref: str) -> str:
    return str(stories.unpack(r.lindex(ks().TRACE + ref, 0))["result"])


def test_a_late_redelivery_at_an_equal_time_does_not_override_newer_content(
    crm: Crm, r: redis.Redis
) -> None:
    assert crm.upsert("wh-a", "apt-1", rooms=1) == [1, 1]
    assert crm.upsert("wh-b", "apt-1", rooms=2) == [1, 1]  # same time, later: it wins
    seq = r.hget(ks().PENDING + "g1", "seq")

    assert crm.redeliver_after_the_window("wh-a") == [1, 0]

    assert body(r, "apt-1") == {"external_ref": "apt-1", "rooms": 2}
    assert r.hget(ks().PENDING + "g1", "seq") == seq, "no change: no flush"
    assert last_result(r, "apt-1") == "duplicate"


def test_a_late_redelivery_at_an_equal_version_and_time_changes_nothing(
    crm: Crm, r: redis.Redis
) -> None:
    crm.upsert("wh-a", "apt-1", 3, rooms=1)
    crm.upsert("wh-b", "apt-1", 3, rooms=2)

    assert crm.redeliver_after_the_window("wh-a") == [1, 0]
    assert crm.redeliver_after_the_window("wh-b") == [1, 0]  # the one that holds it: the same

    assert body(r, "apt-1") == {"external_ref": "apt-1", "rooms": 2}


def test_a_late_redelivery_of_an_update_does_not_undo_a_deletion_at_the_same_time(
    crm: Crm, r: redis.Redis
) -> None:
    crm.upsert("wh-a", "apt-1", rooms=1)
    crm.delete("wh-b", "apt-1")

    assert crm.redeliver_after_the_window("wh-a") == [1, 0]
    assert body(r, "apt-1") is None

    # Another event at that time is news still: the later arrival wins, as ever.
    assert crm.upsert("wh-c", "apt-1", rooms=3) == [1, 1]
    assert body(r, "apt-1") == {"external_ref": "apt-1", "rooms": 3}


def test_a_late_redelivery_of_a_snapshot_does_not_delete_what_came_back_at_its_time(
    crm: Crm, r: redis.Redis
) -> None:
    crm.upsert("wh-a", "apt-1", rooms=1, at=T0 - 1)
    crm.upsert("wh-b", "apt-2", rooms=1, at=T0 - 1)
    crm.snapshot("wh-s", "apt-2")  # leaves apt-1 out: deleted at T0
    assert body(r, "apt-1") is None
    crm.upsert("wh-c", "apt-1", rooms=5)  # back, at the snapshot's very time
    crm.upsert("wh-d", "apt-2", rooms=6)  # changed at that time too

    assert crm.redeliver_after_the_window("wh-s") == [1, 0]

    assert body(r, "apt-1") == {"external_ref": "apt-1", "rooms": 5}
    assert body(r, "apt-2") == {"external_ref": "apt-2", "rooms": 6}
    assert last_result(r, "apt-1") == last_result(r, "apt-2") == "duplicate"



async def test_a_tombstone_remembers_who_set_it_so_a_late_redelivery_cannot_revive_it(
    crm: Crm, r: redis.Redis, settings: Settings, client: aioredis.Redis
) -> None:
    crm.upsert("wh-a", "apt-1", rooms=1)
    crm.delete("wh-b", "apt-1")
    r.set(ks().LEASE + "g1", "token-1")
    listings = list((await read_listings(client, ["apt-1"])).values())
    tombstones = Tombstones(client, settings.retention.horizon_ms)
    assert await tombstones.compact("g1", "token-1", now_ms(), listings, [], []) == 1
    assert not r.hexists(ks().LISTING + "apt-1", "at")  # a bare tombstone

    assert crm.redeliver_after_the_window("wh-a") == [1, 0]

    assert r.hget(ks().LISTING + "apt-1", "d") == "1" and not r.exists(ks().BODY + "apt-1")
