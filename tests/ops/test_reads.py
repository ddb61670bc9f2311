"""The operator's read models (bridge.ops) built from the test Redis: typed values whose JSON is
the documented shape (docs/api.md), a group's listings compared by the planner's digest, and
``bridge status`` rendered from the status model."""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

from bridge import constants as k
from bridge.cli.operate import render_status
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.ledger import Accepted, Held, Quarantined
from bridge.ops import Operations
from bridge.ops.models import GroupView, ListingState, Overview, Problems, Status, TargetView
from tests.ops.conftest import Ingest, record_check
from tests.support import crm


def keys(value: object) -> list[str]:
    return list(orjson.loads(orjson.dumps(value)))


async def test_group_view_compares_each_listing_with_what_each_target_accepted(
    ops: Operations, ingest: Ingest
) -> None:
    for ref in ("apt-1", "apt-2"):
        await ingest(crm.upsert("west-side", ref, 1))
    await ingest(crm.event("listing.deleted", "west-side",
                           listing={"external_ref": "apt-3", "version": 1}))
    view = await ops.group("west-side")
    assert isinstance(view, GroupView) and [v.ref for v in view.listings] == ["apt-1", "apt-2",
                                                                            "apt-3"]
    first = view.listings[0].targets["rentix"]
    assert isinstance(first, ListingState) and first.status == "pending"
    await ops.ledger.record_accepted("rentix", "apt-1",
                                     Accepted(first.desired_digest or "", None, now_ms()))
    view = await ops.group("west-side")
    assert {v.ref: v.targets["rentix"].status for v in view.listings} == {
        "apt-1": "in step", "apt-2": "pending", "apt-3": "absent"}
    assert view.listings[2].deleted and view.listings[2].body is None
    assert view.pending is not None and view.pending.seq == 3
    assert keys(view) == ["group", "pending", "due_in_ms", "flushing", "listings", "targets",
                          "history"]
    assert keys(view.listings[0]) == ["ref", "version", "deleted", "occurred_at",
                                      "received_at", "body", "targets", "unreadable"]
    assert keys(first) == ["status", "desired_digest", "accepted", "unreadable"]
    assert keys(view.targets["travtus"]) == ["held", "backoff", "left_on_portal"]


async def test_a_running_flush_is_found_by_its_live_lease_and_a_lapsed_one_is_not(
    ops: Operations, ingest: Ingest, redis: Redis
) -> None:
    await ingest(crm.upsert("g1", "apt-1", 1))
    await ingest(crm.upsert("g2", "apt-2", 1))
    # What a claim records: the group's lease expiry; g2's worker died long ago.
    await redis.zadd(ks().FLUSHING, {"g1": now_ms() + 10_000, "g2": now_ms() - 10_000})
    assert (await ops.group("g1")).flushing
    assert not (await ops.group("g2")).flushing
    overview = await ops.overview(5)
    assert isinstance(overview, Overview) and overview.flushing == ["g1"]
    assert [(w.group, w.reason) for w in overview.waiting] == [("g1", "changes"),
                                                               ("g2", "changes")]
    assert keys(overview) == [
        "now", "minutes", "events", "rejected", "deliveries", "calls", "totals",
        "calls_per_event", "latency_ms", "inbox", "waiting", "flushing", "queue_depth",
        "workers", "redis", "recent_failures"]
    assert overview.redis.maxmemory_policy == "noeviction"


async def test_workers_are_alive_while_their_heartbeat_is_recent(
    ops: Operations, redis: Redis
) -> None:
    now = now_ms()
    await redis.hset(k.WORKERS, mapping={
        "h:1": orjson.dumps({"at": now - 1_000, "pid": 1, "host": "h"}),
        "h:2": orjson.dumps({"at": now - 60_000, "pid": 2, "host": "h"})})
    workers = (await ops.overview(1)).workers
    assert [(w.id, w.pid, w.alive) for w in workers] == [("h:1", 1, True), ("h:2", 2, False)]
    assert keys(workers[0]) == ["id", "at", "pid", "host", "age_s", "alive"]
    assert (await ops.status()).workers["h:1"].at == now - 1_000


async def test_problems_targets_and_status_show_held_and_quarantined_work(
    ops: Operations
) -> None:
    at = now_ms()
    await ops.ledger.hold("travtus", "mass", Held("d-mass", "it would delete 2 listings",
                                                  ["apt-8", "apt-9"], 2, at))
    await ops.ledger.quarantine("rentix", {"apt-1": Quarantined(
        "d-1", "bad", "validation_failed", "needs 3 photos", "files", at)})
    await ops.pause("rentix", "portal maintenance")
    problems = await ops.problems()
    assert isinstance(problems, Problems) and problems.count == 2
    assert keys(problems.held[0]) == ["group", "targets", "digest", "reason", "deletions",
                                      "listings", "since", "unknown_on_portal", "causes"]
    assert keys(problems.quarantined[0]) == ["target", "ref", "digest", "group", "error_type",
                                             "message", "field", "since", "discarded"]
    targets = {t.name: t for t in await ops.targets()}
    assert isinstance(targets["rentix"], TargetView)
    assert (targets["rentix"].state, targets["rentix"].quarantined) == ("paused", 1)
    assert targets["travtus"].held == 1 and targets["travtus"].rate_limit.available == 5
    status = await ops.status()
    assert isinstance(status, Status)
    lines = render_status(status)
    assert "target rentix (rentix): paused (portal maintenance)" in lines
    assert "HELD mass on travtus: it would delete 2 listings" in lines
    assert "  digest d-mass: bridge held release|discard --digest d-mass mass" in lines
    assert "  would delete: apt-8, apt-9" in lines
    assert "  QUARANTINED apt-1 in bad: validation_failed (files): needs 3 photos" in lines


async def test_group_search_finds_a_listings_group_by_its_ref(
    ops: Operations, ingest: Ingest
) -> None:
    await ingest(crm.upsert("west-side", "apt-2", 1))
    await ingest(crm.upsert("west-end", "apt-5", 1))
    found = await ops.search_groups("apt-2")
    assert [(f.group, f.matched, f.ref, f.listings) for f in found] == [
        ("west-side", "ref", "apt-2", 1)]
    assert [f.group for f in await ops.search_groups("west")] == ["west-end", "west-side"]
    assert await ops.search_groups("  ") == []


async def test_closing_operations_closes_the_adapters_its_reads_built(
    ops: Operations, ingest: Ingest
) -> None:
    await ingest(crm.upsert("g1", "apt-1", 1))
    await ops.group("g1")
    adapters = list(ops._adapters.values())
    assert len(adapters) == 2
    await ops.aclose()
    assert all(a._client.http.is_closed for a in adapters) and ops._adapters == {}


async def test_a_listing_whose_stored_state_cannot_be_read_is_shown_with_its_cause(
    ops: Operations, ingest: Ingest, redis: Redis
) -> None:
    for ref in ("apt-1", "apt-2"):
        await ingest(crm.upsert("west-side", ref, 1))
    # A version Lua kept as a double (issue 25): int() cannot read it.
    await redis.hset(ks().LISTING + "apt-2", "v", "1e+20")
    cause = "the stored version (v) is '1e+20': not an integer"
    view = await ops.group("west-side")
    healthy, bad = view.listings
    assert bad.ref == "apt-2" and bad.unreadable == cause and healthy.unreadable is None
    assert {name: (s.status, s.unreadable) for name, s in bad.targets.items()} == {
        "rentix": ("unreadable", cause), "travtus": ("unreadable", cause)}
    assert healthy.targets["rentix"].status == "pending"
    assert [f.group for f in await ops.search_groups("apt-2")] == ["west-side"]
    story = await ops.trace("apt-2")
    assert {name: step.status for name, step in story.targets.items()} == {
        "rentix": "unreadable", "travtus": "unreadable"}
    assert "target rentix (rentix): active" in render_status(await ops.status())


async def test_a_check_that_found_an_unreadable_listing_keeps_its_cause_uncounted(
    ops: Operations, redis: Redis
) -> None:
    await redis.sadd(ks().GROUPS, "west-side")
    cause = "the stored body (body) is 'nope': not JSON (unexpected character)"
    await record_check(redis, "travtus", "west-side", [("apt-2", "unreadable", cause)])
    [_, travtus] = await ops.drift()
    [check] = travtus.latest  # the group found something: listed with the cause
    assert check.unreadable == {"apt-2": cause}
    assert set(check.found.values()) == {0} and set(travtus.current.found.values()) == {0}
    assert (await ops.records.last_checks("travtus", ["west-side"]))["west-side"] == check
