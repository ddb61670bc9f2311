"""Redis that lost state never makes a sync delete what the portal holds: restored from an older
backup (a restart with older files, or keys put back under a running worker), the bridge reads
the portal before its next sync and holds the deletions it did not know about."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import crm
from tests.support.servers import RedisServer
from tests.support.stack import Stack, running_stack

# The tier of every test here (tests/support/tiers.py).
pytestmark = pytest.mark.processes


def _held(stack: Stack, group: str) -> dict[str, Any] | None:
    answer = stack.bridge.get("/api/problems").json()
    return next((h for h in answer["held"] if h["group"] == group), None)


def _sixteen_then_ten(stack: Stack, restore: Any) -> None:
    for i in range(10):
        stack.post(crm.upsert("roll", f"apt-{i}", 1))
    stack.wait(lambda: len(stack.travtus_listings("roll")) == 10, what="ten synced")
    backup = restore.take()
    for i in range(10, 16):
        stack.post(crm.upsert("roll", f"apt-{i}", 1))
    stack.wait(lambda: len(stack.travtus_listings("roll")) == 16, what="sixteen synced")
    restore.put_back(backup)
    stack.post(crm.upsert("roll", "apt-0", 2, deposit=999))  # one edit after the restore
    stack.wait(lambda: _held(stack, "roll"), timeout=20, what="the sync held")
    held = _held(stack, "roll")
    assert held is not None
    assert sorted(held["deletions"]) == sorted(f"apt-{i}" for i in range(10, 16))
    assert {c["cause"] for c in held["causes"]} == {"inferred"}
    assert len(stack.travtus_listings("roll")) == 16  # nothing deleted


class FilesRestore:
    """A backup of the server's data directory, put back with a restart (a new run_id)."""

    def __init__(self, server: RedisServer, tmp_path: Path) -> None:
        self.server = server
        self.copy = tmp_path / "backup"

    def take(self) -> Path:
        self.server.stop()  # a clean stop: the AOF on disk is complete
        shutil.copytree(self.server.directory, self.copy)
        self.server.start()
        return self.copy

    def put_back(self, backup: Path) -> None:
        self.server.stop()
        shutil.rmtree(self.server.directory)
        shutil.copytree(backup, self.server.directory)
        self.server.start()


class KeysRestore:
    """A backup of this test's keys (DUMP), put back under the running workers (RESTORE): the
    server keeps its run_id, but the fence counter goes back."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def take(self) -> dict[bytes, tuple[bytes, int]]:
        backup = {}
        for key in self.client.scan_iter("lb:*"):
            value, ttl = self.client.dump(key), self.client.pttl(key)
            if value is not None:  # a key that expired meanwhile is simply not in the backup
                backup[key] = (value, max(ttl, 0))
        return backup

    def put_back(self, backup: dict[bytes, tuple[bytes, int]]) -> None:
        pipe = self.client.pipeline(transaction=True)
        for key in self.client.scan_iter("lb:*"):
            pipe.delete(key)
        for key, (value, ttl) in backup.items():
            pipe.restore(key, ttl, value, replace=True)
        pipe.execute()


def test_a_backup_restored_with_a_restart_deletes_nothing_and_holds_the_sync(
    redis_srv: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    try:
        with running_stack(redis_url, tmp_path) as stack:
            _sixteen_then_ten(stack, FilesRestore(redis_srv, tmp_path))
    finally:
        if redis_srv.process is None or redis_srv.process.poll() is not None:
            redis_srv.start()


def test_keys_restored_under_a_running_worker_delete_nothing_and_hold_the_sync(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        _sixteen_then_ten(stack, KeysRestore(redis_url))


def test_after_redis_loses_everything_snapshots_rebuild_the_ledger_writing_only_what_changed(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        for group in ("east", "west"):
            for i in range(3):
                stack.post(crm.upsert(group, f"{group}-{i}", 1))
        stack.wait(lambda: all(len(stack.travtus_listings(g)) == 3 for g in ("east", "west"))
                   and len(stack.rentix_listings()) == 6, what="first delivery")
        stack.wait(lambda: not redis.Redis.from_url(redis_url).zcard("lb:{t:default}:due"),
                   what="every flush finished")
        redis.Redis.from_url(redis_url).flushdb()  # Redis lost everything; workers run on
        before = len(stack.journal())
        # The CRM sends each group whole; one listing changed meanwhile.
        for group in ("east", "west"):
            listings = [crm.listing(f"{group}-{i}", 2) for i in range(3)]
            if group == "east":
                listings[0] = crm.listing("east-0", 2, price={"amount": 777, "currency": "EUR",
                                                              "period": "monthly"})
            stack.post(crm.event("group.snapshot", group, occurred_at=crm.at(3600),
                                 listings=listings))
        stack.wait(lambda: stack.rentix_listings()["east-0"]["formData"][
            "announcementValue"] == 777 and stack.travtus_listings("east")["east-0"][
            "lease_terms"][0]["rent"] == 777, what="the changed listing on both portals")
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        stack.wait(lambda: client.hlen("lb:{t:default}:accepted:rentix") == 6
                   and client.hlen("lb:{t:default}:accepted:travtus:west") == 3, timeout=20,
                   what="the ledger rebuilt from what the portals confirm")
        writes = [r for r in stack.journal()[before:] if r["method"] in ("PUT", "DELETE")
                  or r["path"].endswith(("/sync/", "/bulk"))]
        assert [(r["portal"], r["body"].get("externalId") or r["body"].get(
            "group_external_ref")) for r in writes] in (
            [("rentix", "east-0"), ("travtus", "east")], [("travtus", "east"),
                                                          ("rentix", "east-0")])
        assert all(len(stack.travtus_listings(g)) == 3 for g in ("east", "west"))
        assert len(stack.rentix_listings()) == 6
