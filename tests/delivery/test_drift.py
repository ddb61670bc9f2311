"""Delivery that cannot drift, end to end: real worker processes killed and frozen, the sandbox
honouring Idempotency-Keys (a repeated key is replayed, not applied) as the witness."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from bridge.delivery.idempotency import digest
from tests.support import crm
from tests.support.stack import Stack, running_stack

# The tier of every test here (tests/support/tiers.py).
pytestmark = pytest.mark.processes


def rentix(stack: Stack) -> dict[str, dict[str, Any]]:
    return stack.rentix_listings()


def rent(stack: Stack, group: str, ref: str) -> float | None:
    listing = stack.travtus_listings(group).get(ref)
    return listing["lease_terms"][0]["rent"] if listing else None


def keys_of(stack: Stack) -> list[str]:
    return [r["idempotency_key"] for r in stack.journal()
            if r["method"] in ("PUT", "POST", "DELETE") and r["idempotency_key"]
            and not r["replayed"]]


def test_ten_alternations_of_price_status_and_existence_all_reach_both_portals(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path,
                       debounce={"window_ms": 50, "max_wait_ms": 300}) as stack:
        group = "alt"
        stack.post(crm.upsert(group, "keep", 1))  # the group is never empty
        version = 1
        for step in range(20):  # A, B, A, B, ...: ten alternations of each
            version += 1
            odd = step % 2 == 1
            price = 700 if odd else 600
            stack.post(crm.upsert(group, "price", version,
                                  price={"amount": price, "currency": "EUR",
                                         "period": "monthly"}))
            stack.post(crm.upsert(group, "status", version,
                                  status="hidden" if odd else "active"))
            if odd:
                stack.post(crm.event("listing.deleted", group,
                                     listing={"external_ref": "exists", "version": version}))
            else:
                stack.post(crm.upsert(group, "exists", version))

            def arrived(price: int = price, odd: bool = odd) -> bool:
                on_rentix = rentix(stack)
                on_travtus = stack.travtus_listings(group)
                status = on_rentix.get("status", {}).get("formData", {})
                exists = on_rentix.get("exists", {}).get("formData", {})
                return (on_rentix.get("price", {}).get("formData", {}).get(
                            "announcementValue") == price
                        and rent(stack, group, "price") == price
                        and status.get("announcementStatus") in (
                            ("hidden",) if odd else ("active", "pending_active"))
                        and ("status" in on_travtus) is not odd
                        and exists.get("announcementStatus") in (
                            ("hidden",) if odd else ("active", "pending_active"))
                        and ("exists" in on_travtus) is not odd)

            stack.wait(arrived, timeout=15, what=f"step {step} on both portals")
        # A new intent never reuses a key: every key the portals applied is distinct.
        applied = keys_of(stack)
        assert len(applied) == len(set(applied))
        assert not [r for r in stack.journal() if r["replayed"]]


def test_a_worker_killed_mid_flush_is_replaced_within_15_seconds_with_the_same_keys(
    redis_url: str, tmp_path: Path
) -> None:
    # A long job timeout: recovery must come from the short lease, not from arq's job timeout.
    with running_stack(redis_url, tmp_path, workers=0,
                       delivery={"job_timeout_s": 60, "lease_ms": 10_000}) as stack:
        fault = {"portal": "rentix", "method": "PUT", "path": "/listings", "latency_ms": 1500,
                 "count": 1}
        assert stack.sandbox.post("/_sandbox/faults", json=fault).status_code in (200, 201)
        victim = stack.start_worker()
        for i in range(3):
            stack.post(crm.upsert("kill", f"apt-{i}", 1))
        client = redis.Redis.from_url(redis_url)
        stack.wait(lambda: client.exists("lb:{t:default}:lease:kill"), what="the flush under way")
        # The replacement is up (its heartbeat is in) before the kill: what is measured is the
        # lease, not a process start on a busy machine.
        stack.start_worker()
        stack.wait(lambda: client.hlen("lb:workers") >= 2, what="the second worker up")
        stack.wait(lambda: stack.journal("rentix"), what="the slow PUT sent")
        stack.kill(victim)
        killed_at = time.monotonic()
        stack.wait(lambda: set(rentix(stack)) == {"apt-0", "apt-1", "apt-2"}
                   and len(stack.travtus_listings("kill")) == 3, timeout=30, what="recovery")
        recovery = time.monotonic() - killed_at
        print(f"\nrecovery after SIGKILL mid-flush: {recovery:.1f} s (lease 10 s)")
        assert recovery < 15
        keys = stack.keys_per_listing("rentix", "/listings", "externalId")
        assert all(len(k) == 1 for k in keys.values())  # the same intent kept its key


def test_a_worker_frozen_past_its_lease_writes_nothing_and_portal_and_ledger_agree(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path, workers=0,
                       delivery={"job_timeout_s": 60, "lease_ms": 1_500}) as stack:
        fault = {"portal": "rentix", "method": "PUT", "path": "/listings", "latency_ms": 3000,
                 "count": 1}
        assert stack.sandbox.post("/_sandbox/faults", json=fault).status_code in (200, 201)
        frozen = stack.start_worker()
        stack.post(crm.upsert("freeze", "apt-1", 1, price=_price(500)))
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        stack.wait(lambda: stack.journal("rentix"), what="the slow PUT under way")
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            stack.wait(lambda: not client.exists("lb:{t:default}:lease:freeze"), timeout=10,
                       what="the frozen worker's lease to lapse")
            stack.post(crm.upsert("freeze", "apt-1", 2, price=_price(900)))
            stack.start_worker()
            # The portal shows the newer content a moment before the ledger records it: the
            # record compared below is the one both agree on.
            stack.wait(lambda: _agree(stack, client, "apt-1", 900), what="the newer content")
            before = client.hgetall("lb:{t:default}:accepted:rentix")
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        # The frozen worker's answer arrives now: it must not record it over the newer one,
        # and whatever reached the portal late, portal and ledger end on the newest content.
        stack.wait(lambda: _agree(stack, client, "apt-1", 900), timeout=15,
                   what="portal and ledger to agree on the newest content")
        time.sleep(1.0)  # anything the woken worker still did would show now
        assert _agree(stack, client, "apt-1", 900)
        assert orjson.loads(client.hget("lb:{t:default}:accepted:rentix", "apt-1"))["digest"] == \
            orjson.loads(before["apt-1"])["digest"]
        assert frozen.poll() is None  # it woke and carried on


def _price(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR", "period": "monthly"}


def _agree(stack: Stack, client: redis.Redis, ref: str, price: int) -> bool:
    """Rentix holds the content the ledger says it accepted, and it is the newest."""
    raw = client.hget("lb:{t:default}:accepted:rentix", ref)
    if raw is None:
        return False
    record = orjson.loads(raw)
    on_portal = rentix(stack).get(ref, {}).get("formData", {})
    # The ledger keeps a digest of what was sent: that of the write carrying this price.
    sent = [r["body"] for r in stack.writes("rentix", "/listings") if r["method"] == "PUT"
            and r["body"]["externalId"] == ref and r["body"]["announcementValue"] == price]
    return (bool(sent) and record["digest"] == digest(sent[-1])
            and on_portal.get("announcementValue") == price
            and rent(stack, "freeze", ref) == price
            and not client.hexists("lb:{t:default}:intent:rentix", ref))


def _held(stack: Stack, group: str) -> dict[str, Any] | None:
    answer = stack.bridge.get("/api/problems").json()
    return next((h for h in answer["held"] if h["group"] == group), None)


def test_a_release_names_the_reviewed_sync_and_a_changed_one_sends_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        for i in range(20):
            stack.post(crm.upsert("pin", f"apt-{i}", 1))
        stack.wait(lambda: len(stack.travtus_listings("pin")) == 20, what="first sync")
        stack.post(crm.event("group.snapshot", "pin", occurred_at=crm.at(3600),
                             listings=[crm.listing(f"apt-{i}", 2) for i in range(14)]))
        stack.wait(lambda: _held(stack, "pin"), what="the sync deleting 6 held")
        reviewed = _held(stack, "pin")
        assert reviewed is not None and len(reviewed["deletions"]) == 6
        # Before the operator clicks, an empty snapshot replaces what is held.
        stack.post(crm.event("group.snapshot", "pin", occurred_at=crm.at(7200),
                             listings=[]))
        stack.wait(lambda: (_held(stack, "pin") or {}).get("digest") != reviewed["digest"],
                   what="the new held sync")
        answer = stack.bridge.post("/api/held/release", json={
            "target": "travtus", "group": "pin", "digest": reviewed["digest"]})
        assert answer.status_code == 409
        assert sorted(answer.json()["error"]["held"]["deletions"]) == sorted(
            f"apt-{i}" for i in range(20))
        time.sleep(1.0)  # a wrongly released sync would reach the portal by now
        assert len(stack.travtus_listings("pin")) == 20


def test_a_discard_is_spent_once_the_group_changes(redis_url: str, tmp_path: Path) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        stack.post(crm.upsert("spent", "apt-0", 1))
        stack.wait(lambda: stack.travtus_listings("spent"), what="first sync")
        stack.post(crm.upsert("spent", "apt-0", 2, status="hidden"))  # an empty sync: held
        stack.wait(lambda: _held(stack, "spent"), what="the empty sync held")
        held = _held(stack, "spent")
        assert held is not None
        answer = stack.bridge.post("/api/held/discard", json={
            "target": "travtus", "group": "spent", "digest": held["digest"]})
        assert answer.status_code == 200, answer.text
        stack.post(crm.upsert("spent", "apt-0", 3))  # shown again: synced as usual
        stack.wait(lambda: stack.travtus_listings("spent").get("apt-0", {}).get(
            "number_of_bathrooms") is not None and not _held(stack, "spent"),
            what="the listing back")
        # Hidden again: the same empty digest as the discarded one, but a new decision.
        stack.post(crm.upsert("spent", "apt-0", 4, status="hidden"))
        stack.wait(lambda: _held(stack, "spent"), what="the new empty sync held again")
        assert (_held(stack, "spent") or {})["digest"] == held["digest"]
        assert stack.travtus_listings("spent")
