"""The retention horizon at ingest: events older than it are refused as stale, and a
compacted tombstone orders the late events received until it expires, then comes back to life
only for news."""

from __future__ import annotations

import json

import redis

from bridge import constants as k
from bridge import stories
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.settings import RetentionSettings, Settings
from tests.support.ingest import Scripts

# The present, as Redis's clock reads it too: its expiries are judged against it.
NOW = now_ms()
HORIZON = RetentionSettings(horizon_days=1)


def run(r: redis.Redis, settings: Settings, webhook_id: str, kind: str, occurred: int,
        ref: str = "apt-1", version: int = 1, now: int = NOW) -> list[int]:
    body = json.dumps({"rent": version})
    return Scripts(r, settings, HORIZON)(webhook_id, now, kind, "g1", occurred, ref, version,
                                         body)


def test_an_event_older_than_the_horizon_is_refused_as_stale_and_said_so(
    r: redis.Redis, settings: Settings
) -> None:
    late = NOW - HORIZON.horizon_ms - 1
    assert run(r, settings, "wh-1", "u", late) == [1, 0]
    assert not r.exists(ks().LISTING + "apt-1")
    assert not r.exists(ks().MEMBERS + "g1") and r.zscore(ks().DUE, "g1") is None
    story = [stories.unpack(x) for x in r.lrange(ks().TRACE + "apt-1", 0, -1)]
    assert [e["result"] for e in story] == ["stale"]
    assert r.hget(ks().METRICS, "webhook_events_total|stale") == "1"
    # Just inside the horizon it is applied.
    assert run(r, settings, "wh-2", "u", late + 2) == [1, 1]


def test_the_horizon_is_judged_at_receipt_not_when_a_worker_folds_the_event(
    r: redis.Redis, settings: Settings
) -> None:
    """An event the webhook stored inside the horizon is applied however long it waited in the
    inbox (no worker ran for a day and more): the fold reads the time it was received."""
    received = 1_600_000_000_000  # years before this test folds it
    inside = received - HORIZON.horizon_ms + 1
    assert run(r, settings, "wh-1", "u", inside, now=received) == [1, 1]
    assert r.hget(ks().LISTING + "apt-1", "at") == str(received)
    assert run(r, settings, "wh-2", "u", inside - 2, version=2, now=received) == [1, 0]


def test_a_compacted_tombstone_refuses_older_news_and_a_newer_version_revives_it(
    r: redis.Redis, settings: Settings
) -> None:
    # What a flush leaves once every target accepted the deletion (bridge/delivery/tombstones):
    # a bare hash, listed with its expiry, which the fold removes once it has passed for every
    # event that may still be folded.
    expires = NOW - 10 + HORIZON.horizon_ms
    r.hset(ks().LISTING + "apt-1", mapping={"g": "g1", "v": "5", "t": str(NOW - 10), "d": "1"})
    r.zadd(ks().TOMBSTONES, {"apt-1": expires})
    assert run(r, settings, "wh-1", "u", NOW - 5, version=4) == [1, 0]
    assert r.hget(ks().LISTING + "apt-1", "d") == "1" and r.pttl(ks().LISTING + "apt-1") == -1
    assert r.zscore(ks().TOMBSTONES, "apt-1") == expires, "it lives until its expiry"
    assert run(r, settings, "wh-2", "u", NOW - 5, version=6) == [1, 1]
    assert r.hget(ks().LISTING + "apt-1", "d") == "0"
    assert r.zscore(ks().TOMBSTONES, "apt-1") is None, "a listing that came back does not expire"
    assert r.pttl(ks().LISTING + "apt-1") == -1
    assert r.smembers(ks().MEMBERS + "g1") == {"apt-1"}


def test_a_tombstone_goes_once_its_horizon_passed_and_no_older_event_waits(
    r: redis.Redis, settings: Settings
) -> None:
    """Past its expiry (and the grace for webhooks storing events now) a fold removes it, an
    empty one too; one not expired yet stays."""
    past = now_ms() - k.TOMBSTONE_GRACE_MS - 1
    for ref, expires in (("apt-1", past), ("apt-2", now_ms() + 60_000)):
        r.hset(ks().LISTING + ref, mapping={"g": "g1", "v": "5", "t": "1", "d": "1"})
        r.zadd(ks().TOMBSTONES, {ref: expires})
    assert not r.exists(ks().INBOX)
    Scripts(r, settings, HORIZON).fold_all()
    assert not r.exists(ks().LISTING + "apt-1") and r.exists(ks().LISTING + "apt-2")
    assert r.zrange(ks().TOMBSTONES, 0, -1) == ["apt-2"]


def test_a_groups_change_counter_expires_when_the_group_is_idle(
    r: redis.Redis, settings: Settings
) -> None:
    run(r, settings, "wh-1", "u", NOW)
    assert 0 < r.pttl(ks().PENDING + "g1") <= k.GROUP_IDLE_MS
