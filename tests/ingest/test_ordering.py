"""Ordering edge cases (contract section 2) and each deletion's recorded cause.

Ordering runs the real ingest script against the test Redis; refusals of non-finite numbers go
through the real webhook, since they are about its answers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import orjson
import pytest
import redis

from bridge import constants as k
from bridge.app import create_app
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.desired import DesiredListing, decode_hash
from bridge.settings import Settings
from tests.conftest import SECRET
from tests.support import crm
from tests.support.ingest import Scripts, fold
from tests.support.servers import serve_app

# The present, as Redis's clock reads it too: its expiries are judged against it.
T0 = now_ms()
SNAPSHOT_AT = T0 + 10_000


class Ingest:
    """The webhook's own script, called directly with explicit times."""

    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.r = r
        self.scripts = Scripts(r, settings)
        self.ids = itertools.count(1)

    def _call(self, kind: str, group: str, at: int, *items: str | int) -> int:
        # Received "now" is the event's own time: the per-minute counters stay in view.
        status, applied = self.scripts(f"wh-{next(self.ids)}", at, kind, group, at, *items)
        assert status == 1
        return int(applied)

    def upsert(self, ref: str, at: int, version: int = -1, group: str = "g", **body: object
               ) -> int:
        return self._call("u", group, at, ref, version,
                          orjson.dumps({"external_ref": ref, **body}).decode())

    def delete(self, ref: str, at: int, version: int = -1, group: str = "g") -> int:
        return self._call("d", group, at, ref, version, "")

    def snapshot(self, at: int, *refs: str, group: str = "g") -> int:
        items: list[str | int] = []
        for ref in refs:
            items += [ref, -1, orjson.dumps({"external_ref": ref}).decode()]
        return self._call("s", group, at, *items)


@pytest.fixture
def ingest(r: redis.Redis, settings: Settings) -> Ingest:
    return Ingest(r, settings)


def desired(r: redis.Redis, ref: str) -> DesiredListing:
    listing = decode_hash(ref, r.hgetall(ks().LISTING + ref), r.get(ks().BODY + ref))
    assert listing is not None
    return listing


def stale_count(r: redis.Redis) -> int:
    return sum(int(r.hget(key, "stale") or 0) for key in r.keys(ks().STATS + "*"))


# A snapshot's deletion outranks everything from before it --------------------------------------

def test_a_late_update_from_before_a_deleting_snapshot_is_stale_whatever_its_version(
    ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("a", T0, version=5, rooms=5)
    ingest.snapshot(SNAPSHOT_AT, "b")  # "a" is absent: deleted at SNAPSHOT_AT

    assert ingest.upsert("a", SNAPSHOT_AT - 1, version=6, rooms=6) == 0
    assert ingest.delete("a", SNAPSHOT_AT - 1, version=7) == 0

    listing = desired(r, "a")
    assert (listing.deleted, listing.version, listing.cause) == (True, 5, k.CAUSE_SNAPSHOT)
    assert listing.body == {"external_ref": "a", "rooms": 5}
    assert stale_count(r) == 2

    assert ingest.upsert("a", SNAPSHOT_AT + 1, version=6, rooms=6) == 1
    listing = desired(r, "a")
    assert (listing.deleted, listing.version, listing.cause) == (False, 6, None)
    assert listing.body == {"external_ref": "a", "rooms": 6}


def test_the_snapshot_floor_is_the_latest_snapshot_that_left_the_listing_out(
    ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("a", T0, version=5)
    ingest.snapshot(SNAPSHOT_AT, "b")
    ingest.snapshot(SNAPSHOT_AT + 5_000, "b")  # already deleted: only the floor rises
    ingest.snapshot(SNAPSHOT_AT - 5_000, "b")  # an older snapshot arriving late lowers nothing

    assert ingest.upsert("a", SNAPSHOT_AT + 4_999, version=9) == 0
    assert desired(r, "a").deleted
    assert ingest.upsert("a", SNAPSHOT_AT + 5_000, version=9) == 1
    assert not desired(r, "a").deleted


def test_a_snapshot_leaving_out_a_deleted_listing_keeps_older_events_out(
    ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("a", T0, version=5)
    ingest.delete("a", T0 + 1_000, version=6)
    ingest.snapshot(SNAPSHOT_AT, "b")

    assert ingest.upsert("a", SNAPSHOT_AT - 1, version=7) == 0
    listing = desired(r, "a")
    assert (listing.deleted, listing.version, listing.cause) == (True, 6, k.CAUSE_DELETED)


# At equal times the later arrival wins --------------------------------------------------------

def test_two_versionless_updates_in_the_same_second_keep_the_later_arrival(
    ingest: Ingest, r: redis.Redis
) -> None:
    assert ingest.upsert("a", T0, rooms=1) == 1
    assert ingest.upsert("a", T0, rooms=2) == 1

    assert desired(r, "a").body == {"external_ref": "a", "rooms": 2}
    assert stale_count(r) == 0


def test_a_versionless_update_then_delete_in_the_same_second_deletes(
    ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("a", T0, rooms=1)
    assert ingest.delete("a", T0) == 1
    assert desired(r, "a").deleted

    assert ingest.upsert("a", T0, rooms=2) == 1  # and the other way round: the update wins
    listing = desired(r, "a")
    assert (listing.deleted, listing.body) == (False, {"external_ref": "a", "rooms": 2})


def test_the_same_version_at_the_same_time_applies_but_anything_strictly_older_does_not(
    ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("a", T0, version=3, rooms=1)
    assert ingest.upsert("a", T0, version=3, rooms=2) == 1

    assert ingest.upsert("a", T0 + 1, version=2, rooms=3) == 0  # older version, later time
    assert ingest.upsert("a", T0 - 1, version=3, rooms=4) == 0  # same version, older time
    assert ingest.upsert("b", T0, rooms=1) == 1
    assert ingest.upsert("b", T0 - 1, rooms=2) == 0  # versionless, older time

    assert desired(r, "a").body == {"external_ref": "a", "rooms": 2}
    assert desired(r, "b").body == {"external_ref": "b", "rooms": 1}
    assert stale_count(r) == 3


def test_a_snapshot_in_the_same_second_as_an_update_deletes_what_it_leaves_out(
    ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("a", SNAPSHOT_AT)
    ingest.snapshot(SNAPSHOT_AT, "b")

    assert desired(r, "a").deleted


# Each deletion's cause ------------------------------------------------------------------------

def test_a_delete_event_records_cause_deleted(ingest: Ingest, r: redis.Redis) -> None:
    ingest.upsert("a", T0)
    ingest.delete("a", T0 + 1)
    ingest.delete("never-seen", T0 + 1)  # a bare tombstone too

    assert r.hget(ks().LISTING + "a", "c") == k.CAUSE_DELETED
    assert desired(r, "a").cause == desired(r, "never-seen").cause == k.CAUSE_DELETED


def test_absence_from_a_snapshot_records_cause_snapshot(ingest: Ingest, r: redis.Redis) -> None:
    ingest.upsert("a", T0)
    ingest.upsert("b", T0)
    ingest.snapshot(SNAPSHOT_AT, "b")

    assert r.hget(ks().LISTING + "a", "c") == k.CAUSE_SNAPSHOT
    assert (desired(r, "a").cause, desired(r, "b").cause) == (k.CAUSE_SNAPSHOT, None)


def test_a_recreated_listing_loses_its_cause(ingest: Ingest, r: redis.Redis) -> None:
    ingest.upsert("a", T0)
    ingest.delete("a", T0 + 1)
    ingest.upsert("b", T0)
    ingest.snapshot(SNAPSHOT_AT, "c")  # "a" stays deleted by its event; "b" goes
    assert (desired(r, "a").cause, desired(r, "b").cause) == (k.CAUSE_DELETED, k.CAUSE_SNAPSHOT)

    ingest.upsert("a", SNAPSHOT_AT + 1)
    ingest.snapshot(SNAPSHOT_AT + 2, "a", "b", "c")  # "b" comes back in a later snapshot

    for ref in ("a", "b"):
        assert "c" not in r.hgetall(ks().LISTING + ref)
        assert (desired(r, ref).deleted, desired(r, ref).cause) == (False, None)


# Non-finite numbers are refused, through the webhook --------------------------------------------

# Stands in for the bad number: orjson cannot write 1e400, so the body's bytes are edited.
MARK = 123456.789


@pytest.fixture
def bridge(settings: Settings) -> Iterator[httpx.Client]:
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, timeout=10) as c:
        yield c


def with_number(payload: dict[str, object], number: bytes) -> bytes:
    body = orjson.dumps(payload)
    assert body.count(b"%r" % MARK) == 1
    return body.replace(b"%r" % MARK, number)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (crm.upsert("g", "a", price={"amount": MARK, "currency": "EUR"}),
         "listing.price.amount"),
        (crm.upsert("g", "a", area_sqm=MARK), "listing.area_sqm"),
        (crm.upsert("g", "a", extra={"rentix": {"sizes": [1, {"inner": MARK}]}}),
         "listing.extra.rentix.sizes[1].inner"),
        (crm.event("group.snapshot", "g", listings=[
            crm.listing("a"), crm.listing("b", extra={"travtus": {"sqft": MARK}})]),
         "listings[1].extra.travtus.sqft"),
    ],
)
@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"NaN", b"Infinity"])
def test_a_non_finite_number_is_400_naming_the_field_and_a_corrected_redelivery_is_accepted(
    bridge: httpx.Client, r: redis.Redis, settings: Settings, payload: dict[str, object],
    field: str, number: bytes
) -> None:
    response = crm.post(bridge, SECRET, with_number(payload, number), msg_id="msg_bad")

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["field"]) == ("invalid_event", field)
    assert error["message"].startswith(f"{field}: Input should be a finite number")
    assert not r.keys(ks().LISTING + "*")
    assert not r.exists(ks().SEEN + "msg_bad")

    corrected = crm.post(bridge, SECRET, with_number(payload, b"42.5"), msg_id="msg_bad")
    assert corrected.status_code == 202, corrected.text
    fold(r, settings)
    assert r.exists(ks().LISTING + "a")
