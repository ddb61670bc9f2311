"""A stored value the bridge cannot read (issue 25), written straight into Redis beside healthy
listings of its group; then a real flush, in process, against the session's Redis and the
sandbox over loopback HTTP. The listing is quarantined alone, on every target, with the field
and value at fault; the rest of the group reaches both portals; nothing is deleted from a
portal; the operator's reads and reconciliation show the cause instead of failing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from bridge.cli.operate import render_status
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.flush import Delivery
from bridge.delivery.ledger import Quarantined
from bridge.ingest.events import parse_event
from bridge.ops import Operations
from bridge.reconcile.records import Records
from bridge.reconcile.service import Reconciler
from bridge.settings import Settings
from tests.support import crm
from tests.support.ingest import FoldingStore
from tests.support.inprocess import sandbox_settings, worker_parts

# Real flushes in this process against the sandbox (tests/support/tiers.py).
pytestmark = pytest.mark.flows

GROUP = "west"
TARGETS = ("rentix", "travtus")
VERSION_CAUSE = "the stored version (v) is '1e+20': not an integer"


@dataclass
class Bridge:
    """What a worker and an operator have, in this process."""

    redis: Redis
    settings: Settings
    delivery: Delivery
    ops: Operations
    reconciler: Reconciler
    portals: httpx.AsyncClient  # the sandbox's admin API: the portals' own state
    store: FoldingStore
    events: int = 0

    async def upsert(self, ref: str, version: int, **fields: Any) -> None:
        """A CRM event, stored and folded by the real scripts."""
        self.events += 1
        event = parse_event(orjson.dumps(crm.upsert(GROUP, ref, version, **fields)))
        await self.store.put(f"msg_{self.events}", event, now_ms())

    async def flush(self) -> None:
        """Flush the group until it is done: it must neither raise nor back off."""
        deadline = time.monotonic() + 15
        while not (outcome := await self.delivery.flush(GROUP)).done:
            assert time.monotonic() < deadline, outcome
            await asyncio.sleep(0.05)  # another flush's lease: come back shortly
        assert not await self.redis.keys(f"{ks().BACKOFF}*")

    async def rentix(self) -> dict[str, dict[str, Any]]:
        items = (await self.portals.get("/rentix/listings")).json()["items"]
        return {i["externalId"]: i["formData"] for i in items if i.get("externalId")}

    async def travtus(self) -> dict[str, dict[str, Any]]:
        listings = (await self.portals.get("/travtus/listings", params={"group": GROUP})
                    ).json()["listings"]
        return {item["external_reference"]: item for item in listings}

    async def deletions(self) -> list[dict[str, Any]]:
        """Every write that took a listing down: a Rentix DELETE or hide, a bulk delete."""
        journal = (await self.portals.get("/journal")).json()["requests"]
        return [r for r in journal if r["method"] == "DELETE"
                or (r["body"] or {}).get("announcementStatus") == "hidden"
                or any(op.get("op") == "delete" for op in (r["body"] or {}).get("operations", []))]

    async def quarantined(self, ref: str) -> dict[str, Quarantined]:
        return {target: entry for target in TARGETS
                if (entry := (await self.ops.ledger.quarantined(target, [ref])).get(ref))}


@pytest.fixture
async def bridge(redis_url: str, sandbox_url: str) -> AsyncIterator[Bridge]:
    settings = sandbox_settings(redis_url, sandbox_url)
    async with worker_parts(settings) as parts, Operations(parts.redis, settings) as ops, \
            httpx.AsyncClient(base_url=f"{sandbox_url}/_sandbox", timeout=10) as portals:
        delivery = Delivery(parts.redis, settings, parts.adapters)
        yield Bridge(parts.redis, settings, delivery, ops,
                     Reconciler(parts.redis, settings, parts.adapters, delivery), portals,
                     parts.store)


def rent(amount: int) -> dict[str, Any]:
    return {"price": {"amount": amount, "currency": "EUR", "period": "monthly"}}


async def test_a_version_lua_kept_as_a_double_quarantines_its_listing_alone_and_deletes_nothing(
    bridge: Bridge
) -> None:
    for ref in ("apt-1", "apt-2", "apt-3"):
        await bridge.upsert(ref, 1)
    await bridge.flush()
    assert set(await bridge.rentix()) == set(await bridge.travtus()) == {"apt-1", "apt-2",
                                                                          "apt-3"}
    # apt-2 changes with a version of 2**63 or more: Lua stores it as a double.
    await bridge.upsert("apt-2", 2, **rent(900))
    await bridge.redis.hset(ks().LISTING + "apt-2", "v", "1e+20")
    await bridge.upsert("apt-1", 2, **rent(650))
    await bridge.flush()

    assert (await bridge.rentix())["apt-1"]["announcementValue"] == 650
    assert (await bridge.travtus())["apt-1"]["lease_terms"][0]["rent"] == 650
    # apt-2 is neither sent nor taken down: both portals keep what they held.
    assert (await bridge.rentix())["apt-2"]["announcementValue"] == 500
    assert (await bridge.travtus())["apt-2"]["lease_terms"][0]["rent"] == 500
    assert await bridge.deletions() == []
    quarantined = await bridge.quarantined("apt-2")
    assert {t: (q.error_type, q.field, q.message, q.group) for t, q in quarantined.items()} == {
        t: ("unreadable_state", "v", VERSION_CAUSE, GROUP) for t in TARGETS}

    # The next change of the group flows; the quarantine stays as it was.
    await bridge.upsert("apt-3", 2, **rent(700))
    await bridge.flush()
    assert (await bridge.travtus())["apt-3"]["lease_terms"][0]["rent"] == 700
    assert (await bridge.rentix())["apt-3"]["announcementValue"] == 700
    assert await bridge.quarantined("apt-2") == quarantined
    assert set(await bridge.travtus()) == {"apt-1", "apt-2", "apt-3"}

    await _operators_see_the_cause(bridge)
    await _reconciliation_reports_the_cause(bridge)


async def _operators_see_the_cause(bridge: Bridge) -> None:
    """The dashboard's problems, the group page and ``bridge status`` name field and value."""
    problems = await bridge.ops.problems()
    assert {(q.target, q.ref, q.field, q.message) for q in problems.quarantined} == {
        (t, "apt-2", "v", VERSION_CAUSE) for t in TARGETS}
    view = await bridge.ops.group(GROUP)
    listings = {listing.ref: listing for listing in view.listings}
    assert listings["apt-2"].unreadable == VERSION_CAUSE
    assert {t: s.status for t, s in listings["apt-2"].targets.items()} == dict.fromkeys(
        TARGETS, "unreadable")
    assert {t: s.status for t, s in listings["apt-1"].targets.items()} == dict.fromkeys(
        TARGETS, "in step")
    lines = render_status(await bridge.ops.status())
    assert lines.count(f"  QUARANTINED apt-2 in {GROUP}: unreadable_state (v): "
                       f"{VERSION_CAUSE}") == 2


async def _reconciliation_reports_the_cause(bridge: Bridge) -> None:
    """A check of each target reports the listing as unreadable (and nothing else), and its
    record keeps the cause."""
    records = Records(bridge.redis)
    for spec in bridge.settings.targets:
        check = await bridge.reconciler.check(spec, GROUP)
        assert [(f.ref, f.kind, f.detail) for f in check.findings] == [
            ("apt-2", "unreadable", VERSION_CAUSE)]
        token = await records.acquire(spec.name, GROUP)
        assert token is not None
        assert await records.record(token, check, [], now_ms() + 60_000, False)
        last = (await records.last_checks(spec.name, [GROUP]))[GROUP]
        assert last.unreadable == {"apt-2": VERSION_CAUSE}


@pytest.mark.parametrize(("field", "corrupt", "shown"), [
    ("v", ("HSET", "v", "1e+20"), "'1e+20': not an integer"),
    ("t", ("HSET", "t", "t"), "'t': not a time in milliseconds"),
    ("at", ("HSET", "at", "soon"), "'soon': not a time in milliseconds"),
    ("d", ("HSET", "d", "yes"), """'yes': neither "0" nor "1\""""),
    ("g", ("HDEL", "g"), "absent: a listing always has a group"),
    ("body", ("SET", "not json"), "'not json': not JSON"),
    ("body", ("SET", "~1/w=="), "'~1/w==': not packed correctly"),
    ("body", ("SET", "[1, 2]"), "'[1, 2]': not a JSON object"),
    ("body", ("SET", '{"price": "cheap"}'), "does not map to a "),
], ids=["version", "occurred", "received", "deleted", "group", "body-json", "body-packing",
        "body-array", "body-shape"])
async def test_each_unreadable_value_is_quarantined_on_every_target_and_the_group_flows(
    bridge: Bridge, field: str, corrupt: tuple[str, ...], shown: str
) -> None:
    await bridge.upsert("apt-1", 1)
    await bridge.upsert("apt-2", 1)
    command, *args = corrupt
    key = (ks().BODY if command == "SET" else ks().LISTING) + "apt-2"
    await bridge.redis.execute_command(command, key, *args)
    await bridge.flush()

    assert set(await bridge.rentix()) == set(await bridge.travtus()) == {"apt-1"}
    assert await bridge.deletions() == []
    quarantined = await bridge.quarantined("apt-2")
    assert set(quarantined) == set(TARGETS)
    for entry in quarantined.values():
        assert (entry.error_type, entry.field, entry.group) == ("unreadable_state", field, GROUP)
        assert f"({field}) is " in entry.message and shown in entry.message
    view = await bridge.ops.group(GROUP)
    assert {listing.ref: {t: s.status for t, s in listing.targets.items()}
            for listing in view.listings} == {"apt-1": dict.fromkeys(TARGETS, "in step"),
                                              "apt-2": dict.fromkeys(TARGETS, "unreadable")}
    for spec in bridge.settings.targets:
        check = await bridge.reconciler.check(spec, GROUP)
        assert [(f.ref, f.kind, f.fields) for f in check.findings] == [
            ("apt-2", "unreadable", (field,))]


async def test_an_unreadable_listing_on_travtus_that_the_ledger_forgot_holds_the_sync(
    bridge: Bridge
) -> None:
    """Left out of the sync, it would be deleted as "on the portal but never sent" (one of six
    is within both guards): the sync is held for an operator instead."""
    refs = [f"apt-{i}" for i in range(6)]
    for ref in refs:
        await bridge.upsert(ref, 1)
    await bridge.flush()
    assert set(await bridge.travtus()) == set(refs)
    # The ledger lost one listing's Travtus record (a restore, a hand edit), and that
    # listing's state became unreadable: the sync cannot carry it.
    await bridge.redis.hdel(f"{ks().ACCEPTED}travtus:{GROUP}", "apt-2")
    await bridge.upsert("apt-2", 2, **rent(900))
    await bridge.redis.hset(ks().LISTING + "apt-2", "v", "1e+20")
    await bridge.upsert("apt-1", 2, **rent(650))
    await bridge.flush()

    assert set(await bridge.travtus()) == set(refs), "nothing deleted from Travtus"
    held = await bridge.ops.ledger.held("travtus")
    assert "cannot read (apt-2)" in held[GROUP].reason
    assert not await bridge.deletions()
