"""Rentix ahead of the debounce (issue 30): the sender takes the changed listings of a busy group
still waiting for its flush into the outbox (bridge/delivery/ahead.py), and the guards still
judge the group's change as the one it was before any of it landed. A real flush and the real
sender in this process, against the session's Redis and the sandbox over loopback HTTP; the
worker's own wake-up of an idle sender, with real processes, at the end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bridge.constants import ks
from bridge.delivery.ahead import ahead_key
from bridge.delivery.outbox import Outbox
from bridge.settings import RentixTarget, Settings
from tests.conftest import make_settings
from tests.delivery.test_bulk_fresh import rentix_writes, rents
from tests.delivery.test_guards_everywhere import GROUP, Bridge, bridge_fixture
from tests.support import crm
from tests.support.stack import running_stack

pytestmark = pytest.mark.flows

REFS = [f"apt-{i:02}" for i in range(6)]
# Settled on both portals first (a group of 20), for the guards' denominators.
HELD = [f"old-{i:02}" for i in range(20)]


def rent(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR", "period": "monthly"}


def settings_for(redis_url: str, sandbox_url: str, **sections: Any) -> Any:
    """Both portals on the sandbox; every write on Rentix by bulk, no PUT lane; a debounce
    window of 0, so a group with changes waiting counts as busy at once."""
    return make_settings(redis_url, targets=[
        {"name": "rentix", "kind": "rentix", "base_url": f"{sandbox_url}/rentix/api/v1",
         "api_key": "sandbox", "bulk_per_minute": 600, "bulk_after_s": 0.1,
         "put_lane": False, **sections.pop("rentix", {})},
        {"name": "travtus", "kind": "travtus", "base_url": f"{sandbox_url}/travtus",
         "token_url": f"{sandbox_url}/travtus/oauth2/token", "client_id": "sandbox",
         "client_secret": "sandbox"}],
        debounce={"window_ms": 0, "max_wait_ms": 60_000}, **sections)


def fixture_with(**sections: Any) -> Any:
    return bridge_fixture(lambda redis_url, sandbox_url: settings_for(redis_url, sandbox_url,
                                                                      **sections))


ahead_bridge = fixture_with()
# Guards that only the fraction can trip: 5 inferred deletions of 20 is more than 0.2, of 25
# is not.
fraction_bridge = fixture_with(guard={"max_delete_count": 100, "max_delete_fraction": 0.2})
adopting_bridge = fixture_with(rentix={"adopt": True})
# The same guards, Rentix by single PUTs (nothing ever goes ahead).
put_fraction_bridge = fixture_with(guard={"max_delete_count": 100, "max_delete_fraction": 0.2},
                                   rentix={"bulk_per_minute": 0})


async def send(bridge: Bridge) -> None:
    """One run of Rentix's sender, whatever its outbox holds (it may take writes ahead)."""
    spec = next(t for t in bridge.delivery.settings.targets if isinstance(t, RentixTarget))
    await bridge.delivery.sender.drain(spec)
    await bridge.drain()


async def record(bridge: Bridge) -> dict[str, str]:
    raw = await bridge.redis.hgetall(ahead_key("rentix", GROUP))  # type: ignore[misc]
    return {k.decode(): v.decode() for k, v in raw.items()}


async def test_a_busy_groups_creates_and_updates_reach_rentix_before_its_flush(
    ahead_bridge: Bridge
) -> None:
    bridge = ahead_bridge
    for ref in REFS:
        await bridge.post(crm.upsert(GROUP, ref, 1, price=rent(500)))
    await send(bridge)  # no flush yet
    assert await rents(bridge) == dict.fromkeys(REFS, 500)
    assert await bridge.travtus() == {}  # the group sync waits for the debounce
    marks = await record(bridge)
    assert sorted(marks) == REFS and all(v.endswith(":c") for v in marks.values()), marks
    story = await bridge.ops.trace(REFS[0])
    assert any(getattr(e, "detail", None) == "ahead of its group's flush"
               for e in story.entries), story
    # A second look takes nothing again: the same change is not planned twice.
    await send(bridge)
    assert len(await rentix_writes(bridge)) == 6
    # The flush finds Rentix holding every listing: nothing more goes there; Travtus gets the
    # group, and the creates, now judged, are forgotten.
    assert (await bridge.flush()).done
    assert len(await rentix_writes(bridge)) == 6
    assert set(await bridge.travtus()) == set(REFS)
    assert await record(bridge) == {}
    # Updates go ahead too (a bulk of their own), and are not marked as creates.
    for ref in REFS[:3]:
        await bridge.post(crm.upsert(GROUP, ref, 2, price=rent(700)))
    await send(bridge)
    assert await rents(bridge) == {**dict.fromkeys(REFS[:3], 700),
                                   **dict.fromkeys(REFS[3:], 500)}
    marks = await record(bridge)
    assert sorted(marks) == REFS[:3] and not any(v.endswith(":c") for v in marks.values())
    writes = await rentix_writes(bridge)
    assert len(writes) == 9 and len({key for _, _, key in writes}) == 2
    assert (await bridge.flush()).done
    assert len(await rentix_writes(bridge)) == 9


async def test_a_create_taken_ahead_is_part_of_the_change_the_guards_judge(
    fraction_bridge: Bridge
) -> None:
    """A snapshot that replaces 5 of a group's 20 listings with 5 new ones: 5 inferred deletions
    of 20 is past max_delete_fraction = 0.2. The 5 creates land ahead of the flush, yet the
    guards measure against the group as it was (20), not as Rentix holds it now (25)."""
    bridge = fraction_bridge
    for ref in HELD:
        await bridge.post(crm.upsert(GROUP, ref, 1))
    await bridge.flush()
    await send(bridge)
    assert await bridge.shown_on_rentix() == set(HELD) == set(await bridge.travtus())
    new = [f"new-{i:02}" for i in range(5)]
    await bridge.post(crm.event("group.snapshot", GROUP, occurred_at=crm.at(3600), listings=[
        crm.listing(ref, 1) for ref in [*HELD[5:], *new]]))
    await send(bridge)
    assert await bridge.shown_on_rentix() == {*HELD, *new}  # the creates went ahead
    await bridge.flush()
    await send(bridge)
    [held] = await bridge.ops.held_changes()
    assert held.targets == ["rentix", "travtus"] and sorted(held.deletions) == HELD[:5]
    assert "5 of the group's 20 listings" in held.reason, held.reason
    assert await bridge.shown_on_rentix() == {*HELD, *new} == set(await bridge.travtus())
    # Still held at the group's next flush, with the same digest: the creates stay counted
    # until a flush settles the change.
    await bridge.post(crm.upsert(GROUP, new[0], 2))
    await send(bridge)
    await bridge.flush()
    [again] = await bridge.ops.held_changes()
    assert again.digest == held.digest and "of the group's 20 listings" in again.reason
    # Released: the deletions go on both portals, and the creates are forgotten.
    await bridge.ops.release(None, GROUP, held.digest)
    await bridge.flush()
    await send(bridge)
    assert await bridge.shown_on_rentix() == {*HELD[5:], *new} == set(await bridge.travtus())
    assert await record(bridge) == {}


async def test_a_held_change_stays_held_when_its_own_creates_grow_the_group(
    put_fraction_bridge: Bridge
) -> None:
    """Without anything going ahead: the held change's creates flow at its first flush, so at
    the group's next flush both portals hold 25; the same 5 deletions stay held (5 of 25 would
    pass the fraction) until an operator decides."""
    bridge = put_fraction_bridge
    for ref in HELD:
        await bridge.post(crm.upsert(GROUP, ref, 1))
    await bridge.flush()
    new = [f"new-{i:02}" for i in range(5)]
    await bridge.post(crm.event("group.snapshot", GROUP, occurred_at=crm.at(3600), listings=[
        crm.listing(ref, 1) for ref in [*HELD[5:], *new]]))
    await bridge.flush()
    [held] = await bridge.ops.held_changes()
    assert await bridge.shown_on_rentix() == {*HELD, *new} == set(await bridge.travtus())
    await bridge.post(crm.upsert(GROUP, HELD[10], 2))
    await bridge.flush()
    [again] = await bridge.ops.held_changes()
    assert again.digest == held.digest
    assert await bridge.shown_on_rentix() == {*HELD, *new} == set(await bridge.travtus())
    # A change of the deletions themselves is judged afresh: the CRM sends one back, and 4
    # inferred deletions of the 25 the group now holds are within the fraction.
    await bridge.post(crm.event("listing.updated", GROUP, occurred_at=crm.at(7200),
                                listing=crm.listing(HELD[0], 3)))
    await bridge.flush()
    assert await bridge.ops.held_changes() == []
    kept = {HELD[0], *HELD[5:], *new}
    assert await bridge.shown_on_rentix() == kept == set(await bridge.travtus())


async def test_what_the_guards_judge_waits_for_the_flush(ahead_bridge: Bridge) -> None:
    bridge = ahead_bridge
    for ref in REFS:
        await bridge.post(crm.upsert(GROUP, ref, 1, price=rent(500)))
    await bridge.flush()
    await send(bridge)
    await bridge.post(crm.upsert(GROUP, REFS[0], 2, price=rent(900), status="hidden"))
    await bridge.post(crm.event("listing.deleted", GROUP,
                                listing={"external_ref": REFS[1], "version": 2}))
    await bridge.post(crm.upsert(GROUP, REFS[2], 2, price=rent(900)))
    await send(bridge)
    # Only the plain update went ahead.
    assert await rents(bridge) == {**dict.fromkeys(REFS, 500), REFS[2]: 900}
    await bridge.flush()
    await send(bridge)
    shown = await rents(bridge)
    assert REFS[0] not in shown and REFS[1] not in shown and shown[REFS[2]] == 900


async def test_nothing_goes_ahead_while_a_flush_holds_the_group_or_the_ledger_is_in_doubt(
    ahead_bridge: Bridge
) -> None:
    bridge = ahead_bridge
    r = bridge.redis
    await bridge.post(crm.upsert(GROUP, REFS[0], 1, price=rent(500)))
    # A flush holds the group: it may have read the listing before; its writes land after.
    await r.set(ks().LEASE + GROUP, "a-flush")
    await send(bridge)
    assert await rents(bridge) == {}
    await r.delete(ks().LEASE + GROUP)
    # Redis may have lost state, and the group was not checked against Rentix since.
    await r.hset(ks().WITNESS, "cause", "lost")  # type: ignore[misc]
    await r.set(ks().EPOCH, "after-a-restore")
    await send(bridge)
    assert await rents(bridge) == {}
    await r.hset(ks().VERIFIED + "rentix", GROUP, "after-a-restore")  # type: ignore[misc]
    await send(bridge)
    assert await rents(bridge) == {REFS[0]: 500}


async def test_nothing_goes_ahead_while_rentix_adopts_hand_made_listings(
    adopting_bridge: Bridge
) -> None:
    """A create may have to wait for its link (bridge link): the flush decides it."""
    bridge = adopting_bridge
    await bridge.post(crm.upsert(GROUP, REFS[0], 1, price=rent(500)))
    await send(bridge)
    assert await rents(bridge) == {} and await Outbox(bridge.redis).depth("rentix") == 0


def quiet_settings(redis_url: str, sandbox_url: str) -> Settings:
    """Rentix alone, with a debounce window of a minute."""
    return make_settings(redis_url, targets=[
        {"name": "rentix", "kind": "rentix", "base_url": f"{sandbox_url}/rentix/api/v1",
         "api_key": "sandbox", "put_lane": False}],
        debounce={"window_ms": 60_000, "max_wait_ms": 120_000})


quiet_bridge = bridge_fixture(quiet_settings)


async def test_a_quiet_groups_change_waits_for_its_flush(quiet_bridge: Bridge) -> None:
    """Changes that have not kept coming for longer than the debounce window are not taken:
    the group's flush comes a window after the last, with a single PUT, not a bulk for one
    listing."""
    bridge = quiet_bridge
    await bridge.post(crm.upsert(GROUP, REFS[0], 1, price=rent(500)))
    await send(bridge)
    assert await rents(bridge) == {}
    # Busy: its changes waiting began more than a window before the last.
    pending = ks().PENDING + GROUP
    last = int(await bridge.redis.hget(pending, "last"))  # type: ignore[misc]
    await bridge.redis.hset(pending, "first", str(last - 61_000))  # type: ignore[misc]
    await send(bridge)
    assert await rents(bridge) == {REFS[0]: 500}


@pytest.mark.processes
def test_a_worker_sends_a_busy_groups_listings_long_before_its_debounce_ends(
    redis_url: str, tmp_path: Path
) -> None:
    """Real web and worker processes, a max_wait of 60 s: the fold wakes the idle sender,
    which takes the group's creates ahead; Travtus gets the group only at its flush."""
    with running_stack(redis_url, tmp_path, debounce={"window_ms": 300, "max_wait_ms": 60_000},
                       ) as stack:
        posted = time.monotonic()
        refs = [f"busy-{i:02}" for i in range(30)]
        deadline = time.monotonic() + 20
        n = 0
        # A busy group: a change every 0.1 s, so its debounce never ends (for 60 s).
        while len(stack.rentix_listings()) < len(refs):
            assert time.monotonic() < deadline, stack.rentix_listings()
            stack.post(crm.upsert("busy", refs[n % len(refs)], n + 1))
            n += 1
            time.sleep(0.1)
        took = time.monotonic() - posted
        travtus = stack.sandbox.get("/_sandbox/travtus/listings", params={"group": "busy"})
        assert travtus.json()["listings"] == [], "the group sync waits for the debounce"
        assert took < 20


async def test_a_senders_token_from_a_fence_that_went_back_is_lost_state(
    ahead_bridge: Bridge
) -> None:
    """The sender takes its tokens from the flushes' counter: one at or below what the worker
    saw means Redis went back in time (its keys restored), as it does for a claim; the sender
    that now runs on every fold must not push the counter past what the flushes saw, hiding it."""
    bridge = ahead_bridge
    witness = bridge.delivery.witness
    await bridge.post(crm.upsert(GROUP, REFS[0], 1, price=rent(500)))
    await bridge.flush()
    await send(bridge)
    assert not witness.lost and witness.floor > 1
    await bridge.redis.set(ks().FENCE, 0)  # restored from an older backup
    await bridge.post(crm.upsert(GROUP, REFS[1], 1, price=rent(500)))
    await send(bridge)
    assert witness.lost
    assert await bridge.redis.hget(ks().WITNESS, "cause") == b"lost"  # type: ignore[misc]
    assert REFS[1] not in await rents(bridge)  # nothing ahead of the group's check
