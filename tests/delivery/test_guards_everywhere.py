"""The guards judge a group's change once, for every target (issue 26): a real flush, in
process, against the session's Redis and the sandbox over loopback HTTP, with both portals
configured. What the guards hold is held on Travtus (group sync) and Rentix (single writes or a
bulk) alike, the rest of the change flows on both, and one release or discard applies to both."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from bridge.cli.operate import render_status
from bridge.clock import now_ms
from bridge.delivery.flush import Delivery
from bridge.delivery.outbox import Outbox
from bridge.delivery.results import FlushOutcome, FlushResult
from bridge.ingest.events import parse_event
from bridge.ops import Operations
from bridge.settings import RentixTarget, Settings
from tests.support import crm
from tests.support.ingest import FoldingStore
from tests.support.inprocess import sandbox_settings, worker_parts

# Real flushes in this process against the sandbox (tests/support/tiers.py).
pytestmark = pytest.mark.flows

GROUP = "west"
ALL = [f"apt-{i:02}" for i in range(20)]
BOTH = ["rentix", "travtus"]


@dataclass
class Bridge:
    """What a worker and an operator have, in this process."""

    redis: Redis
    delivery: Delivery
    ops: Operations
    portals: httpx.AsyncClient  # the sandbox's admin API: the portals' own state
    store: FoldingStore
    events: int = 0

    async def post(self, event: dict[str, Any]) -> None:
        """A CRM event, stored and folded by the real scripts."""
        self.events += 1
        await self.store.put(f"msg_{self.events}", parse_event(orjson.dumps(event)), now_ms())

    async def flush(self) -> FlushResult:
        """One flush of the group (waiting out another's lease)."""
        deadline = time.monotonic() + 15
        while (outcome := await self.delivery.flush(GROUP)).outcome is FlushOutcome.TAKEN:
            assert time.monotonic() < deadline, outcome
            await asyncio.sleep(0.05)
        return outcome

    async def drain(self) -> None:
        """Rentix's sender sends what the outbox holds."""
        spec = next(t for t in self.delivery.settings.targets if isinstance(t, RentixTarget))
        while await Outbox(self.redis).depth(spec.name):
            await self.delivery.sender.drain(spec)

    async def rentix(self) -> dict[str, str]:
        """Each listing on Rentix, and whether it is shown."""
        items = (await self.portals.get("/rentix/listings")).json()["items"]
        return {i["externalId"]: i["formData"].get("announcementStatus", "active")
                for i in items if i.get("externalId")}

    async def shown_on_rentix(self) -> set[str]:
        return {ref for ref, status in (await self.rentix()).items() if status != "hidden"}

    async def travtus(self) -> dict[str, dict[str, Any]]:
        listings = (await self.portals.get("/travtus/listings", params={"group": GROUP})
                    ).json()["listings"]
        return {item["external_reference"]: item for item in listings}

    async def journal(self) -> list[dict[str, Any]]:
        return list((await self.portals.get("/journal")).json()["requests"])


def bridge_fixture(settings_of: Callable[[str, str], Settings] | None = None,
                   **rentix: Any) -> Any:
    """A fixture of a :class:`Bridge` on the sandbox: ``settings_of(redis_url, sandbox_url)``
    names its settings, else both portals with ``rentix``'s settings added."""
    @pytest.fixture
    async def bridge(redis_url: str, sandbox_url: str) -> AsyncIterator[Bridge]:
        settings = settings_of(redis_url, sandbox_url) if settings_of \
            else sandbox_settings(redis_url, sandbox_url, **rentix)
        async with worker_parts(settings) as parts, \
                Operations(parts.redis, settings) as ops, \
                httpx.AsyncClient(base_url=f"{sandbox_url}/_sandbox", timeout=10) as portals:
            yield Bridge(parts.redis, Delivery(parts.redis, settings, parts.adapters), ops,
                         portals, parts.store)

    return bridge


# Single PUTs on Rentix: bulk only past a backlog these tests never reach.
bridge = bridge_fixture(bulk_per_minute=0)
# Every write on Rentix by bulk: more than one waiting is more than PUTs send in 0.1 s.
bulk_bridge = bridge_fixture(bulk_per_minute=600, bulk_after_s=0.1)


async def twenty_on_both(bridge: Bridge) -> None:
    for ref in ALL:
        await bridge.post(crm.upsert(GROUP, ref, 1))
    await bridge.flush()
    await bridge.drain()
    assert set(await bridge.travtus()) == await bridge.shown_on_rentix() == set(ALL)


async def truncated_snapshot(bridge: Bridge) -> None:
    """A snapshot keeping 2 of the 20, both changed: 18 inferred deletions."""
    await bridge.post(crm.event("group.snapshot", GROUP, occurred_at=crm.at(3600), listings=[
        crm.listing(ref, 2, price={"amount": 900, "currency": "EUR", "period": "monthly"})
        for ref in ALL[:2]]))
    await bridge.flush()


async def explicit_deletes(bridge: Bridge, count: int) -> None:
    for ref in ALL[:count]:
        await bridge.post(crm.event("listing.deleted", GROUP,
                                    listing={"external_ref": ref, "version": 2}))
    await bridge.flush()


async def test_a_truncated_snapshot_is_held_on_both_portals_and_released_once_for_both(
    bridge: Bridge
) -> None:
    await twenty_on_both(bridge)
    await truncated_snapshot(bridge)
    assert set(await bridge.travtus()) == await bridge.shown_on_rentix() == set(ALL)
    # The rest of the change flows on both: the two kept listings' new rent.
    assert {(await bridge.travtus())[ref]["lease_terms"][0]["rent"] for ref in ALL[:2]} == {900}
    rentix_puts = [r for r in await bridge.journal() if r["method"] == "PUT"
                   and r["body"]["externalId"] in ALL[:2]]
    assert {r["body"]["announcementValue"] for r in rentix_puts[-2:]} == {900}

    [held] = await bridge.ops.held_changes()
    assert held.group == GROUP and held.targets == BOTH
    assert sorted(held.deletions) == ALL[2:] and "max_delete_count" in held.reason
    assert {c["cause"] for c in held.causes} == {"inferred"}
    status = await bridge.ops.status()
    assert {name: list(t.held) for name, t in status.targets.items()} == {
        "rentix": [GROUP], "travtus": [GROUP]}
    text = render_status(status)
    assert sum(f"HELD {GROUP}" in line for line in text) == 1
    assert any(held.digest in line for line in text)

    released = await bridge.ops.release(None, GROUP, held.digest)
    assert released.targets == BOTH
    await bridge.flush()
    assert set(await bridge.travtus()) == await bridge.shown_on_rentix() == set(ALL[:2])
    assert await bridge.ops.held_changes() == []
    assert (await bridge.flush()).done


async def test_a_discard_leaves_both_portals_as_they_were(bridge: Bridge) -> None:
    await twenty_on_both(bridge)
    await truncated_snapshot(bridge)
    [held] = await bridge.ops.held_changes()
    discarded = await bridge.ops.discard(None, GROUP, held.digest)
    assert discarded.targets == BOTH
    await bridge.flush()
    assert set(await bridge.travtus()) == await bridge.shown_on_rentix() == set(ALL)
    problems = await bridge.ops.problems()
    assert problems.held == [] and await bridge.ops.held_changes() == []
    assert all(not t.held for t in (await bridge.ops.status()).targets.values())


async def test_a_few_explicit_deletions_flow_on_both_portals(bridge: Bridge) -> None:
    await twenty_on_both(bridge)
    await explicit_deletes(bridge, 3)
    assert set(await bridge.travtus()) == await bridge.shown_on_rentix() == set(ALL[3:])
    assert await bridge.ops.held_changes() == []


async def test_a_mass_explicit_delete_is_held_on_both_portals(bridge: Bridge) -> None:
    await twenty_on_both(bridge)
    await explicit_deletes(bridge, 7)  # more than max_delete_count = 5
    assert set(await bridge.travtus()) == await bridge.shown_on_rentix() == set(ALL)
    [held] = await bridge.ops.held_changes()
    assert held.targets == BOTH and sorted(held.deletions) == ALL[:7]
    assert {c["cause"] for c in held.causes} == {"explicit"}


async def test_an_empty_snapshot_is_held_on_both_portals(bridge: Bridge) -> None:
    await twenty_on_both(bridge)
    await bridge.post(crm.event("group.snapshot", GROUP, occurred_at=crm.at(3600),
                                listings=[]))
    await bridge.flush()
    assert set(await bridge.travtus()) == await bridge.shown_on_rentix() == set(ALL)
    [held] = await bridge.ops.held_changes()
    assert held.targets == BOTH and "empty" in held.reason


async def test_a_rentix_bulk_never_carries_a_held_deletion(bulk_bridge: Bridge) -> None:
    bridge = bulk_bridge
    await twenty_on_both(bridge)
    assert any(r["path"].endswith("/listings/bulk") for r in await bridge.journal())
    await truncated_snapshot(bridge)
    # The outbox holds the two kept listings' updates, nothing that takes one down.
    waiting = await Outbox(bridge.redis).entries("rentix")
    assert sorted(e.ref for e in waiting) == ALL[:2]
    assert all(e.operation == "upsert" and e.payload.get("announcementStatus") != "hidden"
               for e in waiting)
    before = len(await bridge.journal())
    await bridge.drain()
    bulks = [r for r in (await bridge.journal())[before:]
             if r["path"].endswith("/listings/bulk")]
    assert bulks and all(op["externalId"] in ALL[:2] for r in bulks
                         for op in r["body"]["operations"])
    assert await bridge.shown_on_rentix() == set(ALL)
    [held] = await bridge.ops.held_changes()
    assert held.targets == BOTH
