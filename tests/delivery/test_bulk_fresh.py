"""Rentix under a steady stream (issue 30): the sender takes a write with its listing's newer
content (bridge/delivery/fresh.py), and a group's listings go oldest change first. A real flush
and the real sender in this process, against the session's Redis and the sandbox over loopback
HTTP. Only an update that no guard judges is taken ahead of its group's flush; a deletion, a
hide or a move waits for the flush, and a write once sent keeps its key."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.fresh import Freshener
from bridge.delivery.ledger import Ledger
from bridge.delivery.outbox import Outbox, PutRecord, Queued
from bridge.portals import RentixAdapter
from tests.delivery.test_bulk import (
    TARGET,
    bridge_settings,
    bulks,
    fault,
    portal,
    put,
    sandbox,  # noqa: F401 (a fixture)
    sender_for,
    wait_until_async,
    write,
)
from tests.delivery.test_guards_everywhere import GROUP, Bridge, bridge_fixture
from tests.support import crm

pytestmark = pytest.mark.flows

REFS = [f"apt-{i:02}" for i in range(6)]
# Every write on Rentix by bulk (more than one waiting is more than PUTs send in 0.1 s), and
# no PUT lane: each test says which channel it is about.
bulk_bridge = bridge_fixture(bulk_per_minute=600, bulk_after_s=0.1, put_lane=False)


def rent(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR", "period": "monthly"}


async def queued(bridge: Bridge, version: int, amount: int) -> dict[str, Queued]:
    """Every listing posted at ``version``, flushed: its write waits in Rentix's outbox."""
    for ref in REFS:
        await bridge.post(crm.upsert(GROUP, ref, version, price=rent(amount)))
    await bridge.flush()
    waiting = await Outbox(bridge.redis).entries("rentix")
    assert sorted(e.ref for e in waiting) == REFS
    return {e.ref: e for e in waiting}


async def rentix_writes(bridge: Bridge) -> list[tuple[str, int, str]]:
    """(ref, rent, key) of every Rentix write the portal applied, bulk operations included."""
    out = []
    for r in await bridge.journal():
        if r["portal"] != "rentix" or r["status"] != 200 or r["replayed"]:
            continue
        if r["path"].endswith("/listings/bulk"):
            out += [(op["externalId"], op.get("announcementValue"), r["idempotency_key"])
                    for op in r["body"]["operations"]]
        elif r["method"] == "PUT":
            out.append((r["body"]["externalId"], r["body"].get("announcementValue"),
                        r["idempotency_key"]))
    return out


async def rents(bridge: Bridge) -> dict[str, int]:
    items = (await bridge.portals.get("/rentix/listings")).json()["items"]
    return {i["externalId"]: i["formData"]["announcementValue"] for i in items
            if i.get("externalId") and i["formData"].get("announcementStatus") != "hidden"}


async def test_a_bulk_carries_the_newer_content_folded_since_its_groups_flush(
    bulk_bridge: Bridge
) -> None:
    bridge = bulk_bridge
    before = await queued(bridge, 1, 500)
    for ref in REFS[:3]:  # folded, and the group's flush has not run
        await bridge.post(crm.upsert(GROUP, ref, 2, price=rent(700)))
    await bridge.drain()
    assert await rents(bridge) == {**dict.fromkeys(REFS[:3], 700),
                                   **dict.fromkeys(REFS[3:], 500)}
    # The newer writes are new intents: their keys were never the flush's.
    ledger = Ledger(bridge.redis)
    assert await ledger.intents("rentix", REFS) == {}
    assert await Outbox(bridge.redis).depth("rentix") == 0
    applied = await rentix_writes(bridge)
    assert len(applied) == 6
    assert all(before[ref].key != key for ref, amount, key in applied if amount == 700)
    # Each story says what the write went with.
    for ref in REFS[:3]:
        story = await bridge.ops.trace(ref)
        assert any(getattr(e, "detail", None) == "newer content, taken as it left the outbox"
                   for e in story.entries), story
    # The group's flush finds Rentix holding what the CRM has: it sends nothing more there,
    # and Travtus gets the change.
    result = await bridge.flush()
    assert result.done
    assert await Outbox(bridge.redis).depth("rentix") == 0
    assert len(await rentix_writes(bridge)) == 6
    travtus = await bridge.travtus()
    assert {ref: travtus[ref]["lease_terms"][0]["rent"] for ref in REFS} == await rents(bridge)


async def test_a_hide_a_delete_or_a_move_waits_for_the_groups_flush_and_its_guards(
    bulk_bridge: Bridge
) -> None:
    bridge = bulk_bridge
    await queued(bridge, 1, 500)
    await bridge.drain()
    await queued(bridge, 2, 600)  # every listing waits in the outbox again
    await bridge.post(crm.upsert(GROUP, REFS[0], 3, price=rent(900), status="hidden"))
    await bridge.post(crm.event("listing.deleted", GROUP,
                                listing={"external_ref": REFS[1], "version": 3}))
    await bridge.post(crm.upsert("east", REFS[2], 3, price=rent(900)))  # moved away
    await bridge.post(crm.upsert(GROUP, REFS[3], 3, price=rent(900)))  # a plain update
    await bridge.drain()
    # Only the plain update went ahead; the others went as the flush planned them.
    assert await rents(bridge) == {REFS[0]: 600, REFS[1]: 600, REFS[2]: 600, REFS[3]: 900,
                                   REFS[4]: 600, REFS[5]: 600}
    await bridge.flush()
    await bridge.drain()
    shown = await rents(bridge)
    assert REFS[0] not in shown and REFS[1] not in shown and shown[REFS[3]] == 900


async def test_a_write_a_flush_replaced_or_one_sent_before_is_left_as_it_is(
    bulk_bridge: Bridge
) -> None:
    bridge = bulk_bridge
    r = bridge.redis
    entries = await queued(bridge, 1, 500)
    await bridge.post(crm.upsert(GROUP, REFS[0], 2, price=rent(700)))
    await bridge.post(crm.upsert(GROUP, REFS[1], 2, price=rent(700)))
    await bridge.post(crm.upsert(GROUP, REFS[2], 2, price=rent(700)))
    await bridge.post(crm.upsert(GROUP, REFS[3], 2, price=rent(700)))
    await bridge.post(crm.upsert(GROUP, REFS[4], 2, price=rent(700)))
    # REFS[0]: a flush replaced it after the sender took it; REFS[1]: sent once already (a
    # retried operation keeps its key); REFS[2]: taken for a PUT, whose record goes too.
    replaced = entries[REFS[0]]
    await r.hset(ks().OUTBOX + "rentix", REFS[0],  # type: ignore[misc]
                 Queued(**{**orjson.loads(replaced.json()), "key": "lb-flush-newer"}).json())
    retried = entries[REFS[1]].retried(1)
    await r.hset(ks().OUTBOX + "rentix", REFS[1], retried.json())  # type: ignore[misc]
    taken_at = now_ms()
    await r.hset(ks().OUTBOX_PUTS + "rentix", REFS[2],  # type: ignore[misc]
                 PutRecord(entries[REFS[2]], taken_at).json())
    token = "fresh-test"
    await r.set(ks().SENDER + "rentix", token)
    adapter = bridge.delivery.adapters["rentix"]
    assert isinstance(adapter, RentixAdapter)
    freshen = Freshener(r, Ledger(r))
    got = await freshen("rentix", token, adapter, [replaced, retried])
    assert got == [replaced, retried]  # neither is touched
    assert Queued(**orjson.loads(await r.hget(ks().OUTBOX + "rentix", REFS[0]))  # type: ignore[misc]
                  ).key == "lb-flush-newer"
    [put] = await freshen("rentix", token, adapter, [entries[REFS[2]]], taken_at)
    assert put.payload["announcementValue"] == 700 and put.key != entries[REFS[2]].key
    record = PutRecord.load(await r.hget(ks().OUTBOX_PUTS + "rentix", REFS[2]))  # type: ignore[misc]
    assert record.op.key == put.key and record.at == taken_at
    assert (await Ledger(r).intents("rentix", [REFS[2]]))[REFS[2]].key == put.key
    # A sender that no longer holds the target replaces nothing.
    assert await freshen("rentix", "another", adapter, [entries[REFS[3]]]) is None
    # Nor while a flush holds the group: it may have read the listing before v2 came, and
    # its write, landing after, would put v1 back in the outbox over v2.
    await r.set(ks().LEASE + GROUP, "a-flush")
    assert await freshen("rentix", token, adapter, [entries[REFS[4]]]) == [entries[REFS[4]]]
    await r.delete(ks().LEASE + GROUP)
    [newer] = await freshen("rentix", token, adapter, [entries[REFS[4]]])
    assert newer.payload["announcementValue"] == 700
    await r.delete(ks().SENDER + "rentix")


async def test_a_groups_listings_go_in_the_order_their_changes_came(bulk_bridge: Bridge) -> None:
    """Oldest change first in a group's lane: not by name, and not by when each was last written
    (a listing that waited quiet since its write does not jump ahead of one that changed
    before it)."""
    bridge = bulk_bridge
    for ref in reversed(REFS):  # written one at a time: apt-05 first, apt-00 last
        await bridge.post(crm.upsert(GROUP, ref, 1, price=rent(500)))
        await bridge.flush()
        await bridge.drain()
    changed = [REFS[i] for i in (3, 0, 5, 1, 4, 2)]
    for ref in changed:  # each received in a later millisecond than the one before
        await bridge.post(crm.upsert(GROUP, ref, 2, price=rent(600)))
        answered = now_ms()

        async def ticked(after: int = answered) -> bool:
            return now_ms() > after

        await wait_until_async(ticked)
    await bridge.flush()  # one flush queues them together
    await bridge.drain()
    bulks = [r for r in await bridge.journal()
             if r["portal"] == "rentix" and r["path"].endswith("/listings/bulk")]
    assert [op["externalId"] for op in bulks[-1]["body"]["operations"]] == changed


async def test_newer_content_behind_an_accepted_write_goes_after_the_groups_other_writes(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client  # noqa: F811
) -> None:
    first = write("apt-1", "g1", 500)
    fault(sandbox, path="/listings/bulk", latency_ms=800, count=1)
    async with sender_for(redis_url, bridge_settings(redis_url, sandbox_url)) as (
            sender, client, spec):
        await put(client, [first], at=now_ms() - 5_000)
        draining = asyncio.create_task(sender.drain(spec))
        await wait_until_async(lambda: client.exists(f"{ks().OUTBOX_BATCH}{TARGET}"))
        # The group's next flush, while the bulk is out: apt-1 changed again, two others too.
        await put(client, [write("apt-1", "g1", 777), write("apt-2", "g1", 600),
                           write("apt-3", "g1", 600)])
        assert await draining == f"{TARGET}: 4 operation(s) sent"
    # apt-1 was just written: the group's listings written longer ago (never) go first.
    sent = [op["externalId"] for r in bulks(sandbox) for op in r["body"]["operations"]]
    assert sent == ["apt-1", "apt-2", "apt-3", "apt-1"]
    assert portal(sandbox)["apt-1"]["announcementValue"] == 777
