"""Nothing stale, ever: an accepted write of content the listing has since moved past never
settles the newer change. In process (a test can hold a write in flight and order the rest),
with the real fold, real flushes, the real sender and the sandbox over loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery import outbox
from bridge.delivery.claims import stamp
from bridge.delivery.flush import Delivery
from bridge.delivery.ledger import intend_writes
from bridge.delivery.outbox import Queued
from bridge.delivery.planning import plan_listings
from bridge.ingest.events import parse_event
from bridge.portals import RentixAdapter, adapters_for
from bridge.settings import RentixTarget, Settings
from tests.conftest import make_settings
from tests.support import crm
from tests.support.ingest import FoldingStore

# Real flushes in this process against the sandbox (tests/support/tiers.py).
pytestmark = pytest.mark.flows

GROUP_SETTLE_S = 20.0


@pytest.fixture
async def sandbox(sandbox_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=10) as client:
        yield client


def settings_for(redis_url: str, sandbox_url: str, travtus: bool = True,
                 **rentix: Any) -> Settings:
    targets: list[dict[str, Any]] = [{
        "name": "rentix", "kind": "rentix", "base_url": f"{sandbox_url}/rentix/api/v1",
        "api_key": "sandbox", **rentix}]
    if travtus:
        targets.append({"name": "travtus", "kind": "travtus",
                        "base_url": f"{sandbox_url}/travtus",
                        "token_url": f"{sandbox_url}/travtus/oauth2/token",
                        "client_id": "sandbox", "client_secret": "sandbox"})
    return make_settings(redis_url, targets=targets,
                         delivery={"retry_base_s": 0.2, "retry_max_s": 1.0},
                         debounce={"window_ms": 50, "max_wait_ms": 200})


@dataclass
class Bridge:
    """A worker's parts, in process: the fold behind each event, flushes and the sender."""

    redis: Redis
    settings: Settings
    delivery: Delivery
    store: FoldingStore
    events: int = 0

    async def post(self, payload: dict[str, Any]) -> None:
        self.events += 1
        event = parse_event(orjson.dumps(payload))
        await self.store.put(f"wh-{self.events}", event, now_ms())

    async def settle(self, within_s: float = GROUP_SETTLE_S) -> None:
        """Run every due flush and send, as the workers would, until nothing is due."""
        deadline = time.monotonic() + within_s
        rentix = [t for t in self.settings.targets if isinstance(t, RentixTarget)]
        while await self.redis.zcard(ks().DUE) or await self.redis.zcard(ks().SENDERS):
            assert time.monotonic() < deadline, "groups or outboxes still due"
            for raw in await self.redis.zrangebyscore(ks().DUE, "-inf", now_ms()):
                await self.delivery.flush(raw.decode())
            if await self.redis.zrangebyscore(ks().SENDERS, "-inf", now_ms()):
                for target in rentix:
                    await self.delivery.sender.drain(target)
            await asyncio.sleep(0.02)  # a debounce or a backoff: polled, as the scheduler does


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Bridge]:
    assert settings.redis_url
    client = Redis.from_url(settings.redis_url)
    delivery = Delivery(client, settings, adapters_for(settings))
    store = FoldingStore(client, settings)
    try:
        yield Bridge(client, settings, delivery, store)
    finally:
        for adapter in delivery.adapters.values():
            await adapter.aclose()
        await store.aclose()
        await client.aclose()


def priced(group: str, ref: str, version: int, amount: int) -> dict[str, Any]:
    return crm.event("listing.updated", group, crm.at(version),
                     listing=crm.listing(ref, version,
                                         price={"amount": amount, "currency": "EUR",
                                                "period": "monthly"}))


async def rentix_price(sandbox: httpx.AsyncClient, ref: str) -> Any:
    items = (await sandbox.get("/_sandbox/rentix/listings")).json()["items"]
    held = {i["externalId"]: i["formData"] for i in items if i.get("externalId")}
    return held[ref]["announcementValue"] if ref in held else None


async def travtus_prices(sandbox: httpx.AsyncClient, group: str) -> dict[str, Any]:
    found = (await sandbox.get("/_sandbox/travtus/listings", params={"group": group})).json()
    return {item["external_reference"]: item["lease_terms"][0]["rent"]
            for item in found["listings"]}


async def held_fault(sandbox: httpx.AsyncClient) -> None:
    """Wait until the sandbox holds the request its one-shot fault caught."""
    deadline = time.monotonic() + 10
    while (await sandbox.get("/_sandbox/faults")).json()["faults"]:
        assert time.monotonic() < deadline, "the slow write never reached the sandbox"
        await asyncio.sleep(0.01)


async def test_a_slow_put_of_the_old_group_landing_last_is_overwritten_with_the_newest(
    redis_url: str, sandbox_url: str, sandbox: httpx.AsyncClient
) -> None:
    settings = settings_for(redis_url, sandbox_url, bulk_per_minute=0)
    async with running(settings) as bridge:
        await bridge.post(priced("g1", "apt-1", 1, 100))
        await bridge.post(priced("g1", "apt-2", 1, 300))  # g1 keeps a listing after the move
        # g1's PUT of apt-1 (the first write of its turn) is held while the move happens.
        await sandbox.post("/_sandbox/faults", json={"portal": "rentix", "method": "PUT",
                                                     "path": "/listings", "latency_ms": 1_500,
                                                     "count": 1})
        old = asyncio.create_task(bridge.delivery.flush("g1"))
        await held_fault(sandbox)
        await bridge.post(priced("g2", "apt-1", 2, 200))  # moved, and repriced
        await bridge.delivery.flush("g2")
        assert await rentix_price(sandbox, "apt-1") == 200
        await old  # its PUT of 100 lands last
        assert await rentix_price(sandbox, "apt-1") == 100
        await bridge.settle()
        assert await rentix_price(sandbox, "apt-1") == 200
        assert await travtus_prices(sandbox, "g2") == {"apt-1": 200}
        assert list(await travtus_prices(sandbox, "g1")) == ["apt-2"]
        # The ledger says what the portal holds: a later flush sends nothing more.
        before = len((await sandbox.get("/_sandbox/journal")).json()["requests"])
        await bridge.delivery.flush("g2")
        assert len((await sandbox.get("/_sandbox/journal")).json()["requests"]) == before


async def test_an_old_groups_write_queued_after_the_move_is_overwritten_with_the_newest(
    redis_url: str, sandbox_url: str, sandbox: httpx.AsyncClient
) -> None:
    """The outbox's part: g1 planned apt-1 before the move and queued it only after g2 had
    sent the newer content (its flush was slow to get there); the bulk lands last."""
    settings = settings_for(redis_url, sandbox_url, travtus=False)
    async with running(settings) as bridge:
        await bridge.post(priced("g1", "apt-1", 1, 100))
        claim = await bridge.delivery.flushes.claim("g1", now_ms())
        assert claim is not None
        await bridge.post(priced("g2", "apt-1", 2, 200))
        await bridge.delivery.flush("g2")
        assert await rentix_price(sandbox, "apt-1") == 200
        # g1's flush goes on with what it claimed: the write goes by bulk, through its lease.
        adapter = bridge.delivery.adapters["rentix"]
        assert isinstance(adapter, RentixAdapter)
        listing = claim.listings[0]
        write = plan_listings("rentix", adapter, [listing], {}, {}).writes[0]
        entry = Queued.of(write, "g1", now_ms(), stamp(listing))
        assert await bridge.delivery.flushes.fenced(claim, [
            *intend_writes("rentix", {write.ref: write.intent}),
            *outbox.put_writes("rentix", [entry], now_ms())])
        await bridge.delivery.flushes.finish(claim, None, ["rentix"])
        await bridge.delivery.sender.drain(settings.targets[0])  # type: ignore[arg-type]
        assert await rentix_price(sandbox, "apt-1") == 100
        await bridge.settle()
        assert await rentix_price(sandbox, "apt-1") == 200


async def test_a_deletion_behind_a_queued_upsert_is_delivered_whatever_settled_meanwhile(
    redis_url: str, sandbox_url: str, sandbox: httpx.AsyncClient
) -> None:
    """The older upsert waits in the outbox while the CRM deletes the listing; a flush claims
    the deletion, and the sender's acceptance of the upsert lands while it runs (it read the
    ledger before, its intents after: nothing to send). Its finish must not settle the
    deletion: the group stays due, and the deletion reaches Rentix."""
    settings = settings_for(redis_url, sandbox_url, travtus=False, bulk_after_s=0.1)
    async with running(settings) as bridge:
        await bridge.post(crm.event("group.snapshot", "g1", crm.at(1), listings=[
            crm.listing("apt-1"), crm.listing("apt-2")]))
        await bridge.delivery.flush("g1")
        assert await bridge.delivery.outbox.depth("rentix") == 2  # queued, not sent yet
        # Explicit: one of two inferred deletions would be held by the fraction guard, which
        # judges Rentix's deletions too.
        await bridge.post(crm.event("listing.deleted", "g1", crm.at(2),
                                    listing={"external_ref": "apt-1", "version": 2}))
        during = await bridge.delivery.flushes.claim("g1", now_ms())
        assert during is not None and "apt-1" in [x.ref for x in during.listings]
        await bridge.delivery.sender.drain(settings.targets[0])  # type: ignore[arg-type]
        assert await _active(sandbox) == {"apt-1", "apt-2"}  # the older upsert, accepted
        await bridge.delivery.flushes.finish(during, None, ["rentix"])
        # apt-1 is a change newer than anything that flush settled.
        mark = await bridge.redis.hget(f"{ks().DIRTY}g1", "apt-1")  # type: ignore[misc]
        assert mark is not None and int(mark) > int(during.seq)
        assert await bridge.redis.zscore(ks().DUE, "g1") is not None
        await bridge.settle()
        assert await _active(sandbox) == {"apt-2"}


async def test_an_accepted_bulk_of_the_current_content_leaves_the_group_settled(
    redis_url: str, sandbox_url: str, sandbox: httpx.AsyncClient
) -> None:
    settings = settings_for(redis_url, sandbox_url, travtus=False, bulk_after_s=0.1)
    async with running(settings) as bridge:
        await bridge.post(crm.event("group.snapshot", "g1", crm.at(1), listings=[
            crm.listing("apt-1"), crm.listing("apt-2")]))
        await bridge.delivery.flush("g1")
        await bridge.delivery.sender.drain(settings.targets[0])  # type: ignore[arg-type]
        assert await _active(sandbox) == {"apt-1", "apt-2"}
        assert await bridge.redis.zscore(ks().DUE, "g1") is None
        assert await bridge.redis.hlen(f"{ks().DIRTY}g1") == 0  # type: ignore[misc]


async def _active(sandbox: httpx.AsyncClient) -> set[str]:
    items = (await sandbox.get("/_sandbox/rentix/listings")).json()["items"]
    return {i["externalId"] for i in items
            if i.get("externalId") and i["formData"]["announcementStatus"] != "hidden"}

