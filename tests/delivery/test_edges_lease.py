"""A group's first Travtus sync lands after its flush lost the lease, so the ledger never
records it; then its only listing moves to another group. Found by the model-based test
(tests/model/), shrunk to: lease_lost_midway(gc, travtus, r0); upsert(ga, r0); settle. The
portal must not keep the listing in the old group."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.ingest.events import parse_event
from tests.delivery.test_unreadable_state import Bridge, bridge  # noqa: F401
from tests.support import crm

# Real flushes in this process against the sandbox (tests/support/tiers.py).
pytestmark = pytest.mark.flows

OLD, NEW = "gc", "ga"


async def upsert(b: Bridge, group: str, ref: str, version: int) -> None:
    b.events += 1
    event = parse_event(orjson.dumps(crm.upsert(group, ref, version)))
    await b.store.put(f"msg_{b.events}", event, now_ms())


async def flush_until_done(b: Bridge, group: str) -> None:
    deadline = time.monotonic() + 15
    while not (outcome := await b.delivery.flush(group)).done:
        assert time.monotonic() < deadline, outcome
        await asyncio.sleep(0.05)


async def on_travtus(b: Bridge, group: str) -> set[str]:
    listings = (await b.portals.get("/travtus/listings", params={"group": group})
                ).json()["listings"]
    return {item["external_reference"] for item in listings}


@pytest.mark.timeout(60)
async def test_a_sync_landed_after_its_lease_was_lost_is_not_taken_for_a_group_never_synced(
    bridge: Bridge,  # noqa: F811
) -> None:
    b = bridge
    old, ref = await first_sync_unrecorded(b)
    await upsert(b, NEW, ref, 2)  # the listing moves
    for group in (old, NEW):
        await flush_until_done(b, group)
    assert ref in await on_travtus(b, NEW)
    # The old group is judged, not skipped: its sync would leave it empty, which the guards
    # always hold for an operator; released, the portal no longer has the listing there.
    [held] = await b.ops.held_changes(old)
    await b.ops.release(None, old, held.digest)
    await flush_until_done(b, old)
    assert await on_travtus(b, old) == set()


async def first_sync_unrecorded(b: Bridge) -> tuple[str, str]:
    """A group whose first sync reached Travtus while its flush lost the lease, so the ledger
    never recorded it. The lease is taken once the sync's intent is recorded; a flush that
    notices before it sends sends nothing (no sync landed): then again, with a fresh group."""
    for attempt in range(5):
        group, ref = f"{OLD}-{attempt}", f"r{attempt}"
        slow = {"portal": "travtus", "method": "POST", "path": "/listing/sync",
                "latency_ms": 1000, "count": 1}
        assert (await b.portals.post("/faults", json=slow)).status_code in (200, 201)
        await upsert(b, group, ref, 1)
        first = asyncio.create_task(b.delivery.flush(group))
        deadline = time.monotonic() + 10
        while not await b.redis.hexists(f"{ks().INTENT}travtus", f"(group):{group}"):
            assert time.monotonic() < deadline, "the first sync under way"
            await asyncio.sleep(0.01)
        await b.redis.delete(ks().LEASE + group)  # the lease lapses while the sync is in flight
        await first  # its answer comes back to a flush that may record nothing
        await b.portals.request("DELETE", "/faults")
        if await on_travtus(b, group) == {ref}:
            assert not await b.redis.hlen(f"{ks().ACCEPTED}travtus:{group}")
            return group, ref
    raise AssertionError("no sync landed after its flush lost the lease in 5 attempts")
