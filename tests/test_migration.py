"""The one-off move of the single-tenant layout into tenant default (bridge/migration.py), on the
Redis of a real run of the last single-tenant release (tests/fixtures/single_tenant_release.json,
made by scripts/make_migration_fixture), restored into the session's server."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from bridge import migration
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.ingest import store
from bridge.ingest.events import ValidEvent
from bridge.ingest.inbox import Inbox
from bridge.migration import MigrationTimeout, migrate
from bridge.settings import Settings

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "single_tenant_release.json")
                     .read_text())
KEYS: list[dict[str, Any]] = FIXTURE["keys"]
NEW = "lb:{t:default}:"
RATE = "lb:ratelimit:"
MOVED = [key["name"] for key in KEYS if not key["name"].startswith(RATE)]
DROPPED = [key["name"] for key in KEYS if key["name"].startswith(RATE)]
# Keys no tenant owns, and arq's: the migration leaves them where they are.
KEPT = ("lb:workers", "lb:{wake}", "lb:{wake}:turns", "lb:check:waitaof", "lb:{r:cred-1}:ratelimit",
        "arq:queue:listing-bridge")
TTL_MARGIN_MS = 10_000


def new(name: str) -> str:
    return NEW + name.removeprefix("lb:")


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """Bytes in, bytes out: DUMP payloads are binary."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


def restore(raw: redis.Redis) -> None:
    """The release's keys with their TTLs; its rate buckets (a second or two left when it was
    dumped) get a minute, so they are still there to drop."""
    with raw.pipeline(transaction=False) as pipe:
        for key in KEYS:
            ttl = key["pttl"] if key["pttl"] > 0 else 0
            if key["name"].startswith(RATE):
                ttl = max(ttl, 60_000)
            pipe.restore(key["name"], ttl, base64.b64decode(key["dump"]))
        pipe.execute()


def deployment_wide(raw: redis.Redis) -> None:
    """KEPT, as the new release writes them, beside the old layout."""
    with raw.pipeline(transaction=False) as pipe:
        pipe.hset("lb:workers", "w-1", "{}")
        pipe.zadd("lb:{wake}", {"default": 0})
        pipe.hset("lb:{wake}:turns", "default", "token:default")
        pipe.set("lb:check:waitaof", "1", px=60_000)
        pipe.set("lb:{r:cred-1}:ratelimit", "5", px=60_000)
        pipe.zadd("arq:queue:listing-bridge", {"job-1": 1})
        pipe.execute()


def snapshot(raw: redis.Redis) -> dict[str, tuple[bytes, int]]:
    """Every key: its DUMP (contents and type, exactly) and its PTTL."""
    return {key.decode(): (raw.dump(key), raw.pttl(key))  # type: ignore[misc]
            for key in raw.scan_iter(count=1000)}


def same_ttl(before: int, after: int) -> bool:
    if before < 0 or after < 0:
        return before == after
    return abs(before - after) < TTL_MARGIN_MS


def assert_moved(before: dict[str, tuple[bytes, int]], raw: redis.Redis) -> None:
    after = snapshot(raw)
    for name in MOVED:
        assert name not in after, f"{name} left under its old name"
        dump, ttl = before[name]
        assert after[new(name)][0] == dump, f"{name}'s contents changed"
        assert same_ttl(ttl, after[new(name)][1]), f"{name}: TTL {ttl} -> {after[new(name)][1]}"
    assert not set(DROPPED) & set(after), "the rate buckets are dropped"
    assert not {new(name) for name in DROPPED} & set(after), "the rate buckets are not moved"
    for name in KEPT:
        assert after[name][0] == before[name][0], f"{name} is left as it was"
    left = {name for name in after if not name.startswith(NEW)}
    assert left == {*KEPT, migration.MIGRATION}


def test_the_fixture_is_the_releases_with_every_kind_of_state() -> None:
    assert FIXTURE["made_by"]["commit"].startswith("b3f513a")
    names = {key["name"] for key in KEYS}
    assert {"lb:inbox", "lb:held:travtus", "lb:quarantine:travtus", "lb:tombstones",
            "lb:accepted:rentix", "lb:listing:apt-1"} <= names
    assert DROPPED and any(name.startswith("lb:seen:") for name in names)
    assert any(key["pttl"] > 0 for key in KEYS) and any(key["pttl"] == -1 for key in KEYS)


async def test_the_release_moves_under_tenant_default_with_contents_and_ttls(
    raw: redis.Redis, client: aioredis.Redis
) -> None:
    restore(raw)
    deployment_wide(raw)
    before = snapshot(raw)
    report = await migrate(client)
    assert report is not None
    assert (report.moved, report.dropped, report.conflicts) == (len(MOVED), len(DROPPED), 0)
    assert report.describe().startswith(
        f"moved {len(MOVED)} keys of the single-tenant layout to tenant default in ")
    assert report.describe().endswith(f" s; dropped {len(DROPPED)} rate buckets")
    assert_moved(before, raw)
    record = {k.decode(): v.decode() for k, v in raw.hgetall("lb:migration").items()}
    assert record["state"] == "done" and record["from"] == "single-tenant"
    assert (int(record["moved"]), int(record["dropped"]), int(record["conflicts"])) == (
        len(MOVED), len(DROPPED), 0)
    assert abs(int(record["at"]) - now_ms()) < 60_000
    # Again: one command, nothing changes.
    moved = {name: dump for name, (dump, _) in snapshot(raw).items()}
    assert await migrate(client) is None
    assert {name: dump for name, (dump, _) in snapshot(raw).items()} == moved


async def test_a_redis_without_the_old_layout_just_records_done(
    raw: redis.Redis, client: aioredis.Redis
) -> None:
    raw.set("other:app", "1")
    report = await migrate(client)
    assert report is not None
    assert (report.moved, report.dropped, report.conflicts) == (0, 0, 0)
    assert report.describe() == ("no keys of the single-tenant layout: nothing to move to "
                                 "tenant default")
    assert raw.hget("lb:migration", "state") == b"done"
    assert raw.get("other:app") == b"1"
    assert await migrate(client) is None


async def test_a_crash_midway_leaves_what_the_next_start_finishes(
    raw: redis.Redis, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    restore(raw)
    deployment_wide(raw)
    before = snapshot(raw)
    real_move = migration._move
    batches = 0

    async def crashing(redis: aioredis.Redis, keys: list[bytes]) -> Any:
        nonlocal batches
        batches += 1
        if batches == 3:
            raise ConnectionError("the process died here")
        return await real_move(redis, keys)

    monkeypatch.setattr(migration, "BATCH", 10)  # a batch per few keys: several before the crash
    monkeypatch.setattr(migration, "_move", crashing)
    with pytest.raises(ConnectionError):
        await migrate(client)
    half = snapshot(raw)
    assert raw.hget("lb:migration", "state") is None
    assert 0 < sum(name.startswith(NEW) for name in half) < len(MOVED)
    # A crash that killed the process leaves its lock, until it lapses.
    raw.set("lb:migration:lock", "dead", px=500)
    monkeypatch.setattr(migration, "_move", real_move)
    started = time.monotonic()
    report = await migrate(client, wait_s=10)
    assert time.monotonic() - started >= 0.4
    assert report is not None
    assert (report.moved, report.dropped, report.conflicts) == (len(MOVED), len(DROPPED), 0)
    assert_moved(before, raw)


async def test_processes_starting_together_migrate_once_and_report_alike(
    raw: redis.Redis, redis_url: str
) -> None:
    restore(raw)
    deployment_wide(raw)
    before = snapshot(raw)
    clients = [aioredis.Redis.from_url(redis_url, decode_responses=d) for d in (False, True)]
    try:
        reports = await asyncio.gather(*(migrate(c) for c in clients))
    finally:
        for c in clients:
            await c.aclose()
    assert all(r is not None for r in reports)
    assert {(r.moved, r.dropped, r.conflicts) for r in reports if r} == {
        (len(MOVED), len(DROPPED), 0)}
    assert_moved(before, raw)


async def test_a_process_waits_for_another_migration_only_so_long(
    raw: redis.Redis, client: aioredis.Redis
) -> None:
    raw.set("lb:listing:apt-1", "x")
    raw.set("lb:migration:lock", "another process", px=10_000)
    with pytest.raises(MigrationTimeout):
        await migrate(client, wait_s=0.3)
    assert raw.get("lb:listing:apt-1") == b"x"


async def test_taken_names_the_old_inbox_goes_first_and_other_keys_are_set_aside(
    raw: redis.Redis, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migration, "BATCH", 2)  # the inbox moves over several pipelines
    raw.rpush("lb:inbox", *(f"old-{n}" for n in range(5)))
    raw.rpush(NEW + "inbox", "new-0", "new-1")
    raw.set("lb:listing:apt-1", "old", px=600_000)
    raw.set(NEW + "listing:apt-1", "new")
    raw.set("lb:due", "moves")
    report = await migrate(client)
    assert report is not None
    assert (report.moved, report.dropped, report.conflicts) == (2, 0, 1)
    assert "1 key whose new name was taken set aside under lb:migration:conflict:" in (
        report.describe())
    assert raw.lrange(NEW + "inbox", 0, -1) == [
        *(f"old-{n}".encode() for n in range(5)), b"new-0", b"new-1"]
    assert not raw.exists("lb:inbox", "lb:listing:apt-1")
    assert raw.get(NEW + "listing:apt-1") == b"new"
    assert raw.get("lb:migration:conflict:lb:listing:apt-1") == b"old"
    assert 590_000 < raw.pttl("lb:migration:conflict:lb:listing:apt-1") <= 600_000
    assert raw.get(NEW + "due") == b"moves"


async def test_the_new_code_folds_the_releases_inbox_and_knows_its_webhook_ids(
    raw: redis.Redis, r: redis.Redis, client: aioredis.Redis, settings: Settings
) -> None:
    restore(raw)
    await migrate(client)
    unfolded = FIXTURE["unfolded"]
    assert await Inbox(client, settings).drain() == unfolded["events"]
    assert not r.exists(ks().INBOX)
    for ref, want in unfolded["expected"].items():
        state = r.hgetall(ks().LISTING + ref)
        assert (state["g"], int(state["v"]), state.get("d") == "1") == (
            want["group"], want["version"], want["deleted"]), ref
    # Every webhook id the release accepted is still one: a redelivery is a duplicate.
    seen = [key["name"].removeprefix("lb:seen:") for key in KEYS
            if key["name"].startswith("lb:seen:")]
    event = ValidEvent("listing.updated", "north", now_ms(), [("apt-9", 1, b"{}")])
    ttl = settings.webhook.dedupe_ttl_seconds
    for webhook_id in seen:
        assert store.accept_now(r, webhook_id, now_ms(), store.entry(
            webhook_id, now_ms(), event), ttl) == 0, webhook_id
    assert store.accept_now(r, "msg_new", now_ms(), store.entry("msg_new", now_ms(), event),
                            ttl) == 1


async def test_a_large_keyspace_moves_in_pipelined_batches(
    raw: redis.Redis, client: aioredis.Redis
) -> None:
    """The figure in bridge/migration.py's docstring: LB_MIGRATION_KEYS=100000 pytest -s."""
    count = int(os.environ.get("LB_MIGRATION_KEYS", "20000"))
    with raw.pipeline(transaction=False) as pipe:
        for n in range(count):
            pipe.hset(f"lb:listing:l-{n}", mapping={"g": "north", "v": n})
            if n % 5_000 == 4_999:
                pipe.execute()
        pipe.execute()
    report = await migrate(client)
    assert report is not None and report.moved == count
    assert raw.dbsize() == count + 1
    assert raw.hget(f"{NEW}listing:l-{count - 1}", "v") == str(count - 1).encode()
    print(f"\nmigrated {count:,} keys in {report.seconds:.2f} s "
          f"({count / report.seconds:,.0f} keys/s)")
