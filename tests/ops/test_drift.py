"""The drift view (bridge.ops): what the workers' periodic checks recorded, per target, through
the records' own script: the last full pass, the pass under way, unknown listings newest first,
failing checks; and ``bridge status``'s lines for it."""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

from bridge.cli.operate import render_drift, render_status
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.ops import Operations
from bridge.ops.models import Drift
from bridge.reconcile.records import Records
from tests.conftest import make_settings
from tests.ops.conftest import TARGETS, record_check

UNLINKED = "made on the portal, not linked to any CRM listing"
NONE = {"missing": 0, "drift": 0, "stale": 0, "unknown": 0}


async def test_a_pass_is_full_once_every_group_and_the_whole_portal_is_checked(
    ops: Operations, redis: Redis
) -> None:
    await redis.sadd(ks().GROUPS, "g1", "g2")
    assert await record_check(redis, "rentix", "g1", [("apt-1", "drift", "price"),
                                                      ("apt-2", "stale", "hidden")],
                              repaired=("drift",)) == 1
    assert await record_check(redis, "rentix", "g2") == 1
    [view, _] = await ops.drift()
    assert isinstance(view, Drift)
    assert (view.groups, view.checked, view.last_pass) == (3, 2, None)  # and the whole portal
    assert view.current.found == {**NONE, "drift": 1, "stale": 1}
    assert await record_check(redis, "rentix", "", [("#7", "unknown", UNLINKED)]) == 2
    [view, travtus] = await ops.drift()
    last = view.last_pass
    assert last is not None and last.finished is not None and last.started is not None
    assert (last.checks, last.found, last.repaired) == (
        3, {"missing": 0, "drift": 1, "stale": 1, "unknown": 1}, {**NONE, "drift": 1})
    assert (view.checked, view.current.checks, view.current.started) == (0, 0, None)
    assert [(u.group, u.ref, u.detail) for u in view.unknown] == [("", "#7", UNLINKED)]
    assert view.unknown_listings == 1
    assert [c.group for c in view.latest] == ["", "g1"]  # newest first; g2 found nothing
    assert (travtus.last_pass, travtus.groups) == (None, 2)
    assert list(orjson.loads(orjson.dumps(view))) == [
        "target", "kind", "interval_s", "groups", "checked", "last_pass", "current",
        "unknown_listings", "unknown", "latest", "failing", "failures"]
    # The next pass starts with the next check.
    await record_check(redis, "rentix", "g1", [("apt-3", "missing", "not on the portal")],
                       repaired=("missing",))
    [view, _] = await ops.drift()
    assert view.checked == 1 and view.current.repaired == {**NONE, "missing": 1}
    assert view.last_pass == last


async def test_unknown_listings_follow_each_groups_last_check(ops: Operations,
                                                              redis: Redis) -> None:
    await redis.sadd(ks().GROUPS, "g1", "g2")
    await record_check(redis, "travtus", "g1", [("by-hand", "unknown", "never sent")])
    await record_check(redis, "travtus", "g2", [("x-1", "unknown", "never sent"),
                                                ("x-2", "unknown", "never sent")])
    [_, view] = await ops.drift()
    assert [(u.group, u.ref) for u in view.unknown] == [("g2", "x-1"), ("g2", "x-2"),
                                                        ("g1", "by-hand")]
    assert view.unknown_listings == 3
    await record_check(redis, "travtus", "g2")  # linked or removed since
    [_, view] = await ops.drift()
    assert [(u.group, u.ref) for u in view.unknown] == [("g1", "by-hand")]
    assert view.unknown_listings == 1 and [c.group for c in view.latest] == ["g1"]


async def test_failing_checks_are_shown_until_one_succeeds(ops: Operations,
                                                           redis: Redis) -> None:
    await redis.sadd(ks().GROUPS, "g1")
    records = Records(redis)
    for _ in range(2):
        token = await records.acquire("travtus", "g1")
        assert token is not None
        await records.failed(token, "travtus", "g1", "transient: 503 server_error", 86_400_000)
    [_, view] = await ops.drift()
    assert view.failing == 1
    assert [(f.group, f.attempts, f.error) for f in view.failures] == [
        ("g1", 2, "transient: 503 server_error")]
    assert view.current.checks == 0  # a failed check is not a check of the pass
    status = await ops.status()
    assert "  CHECKS FAILING for 1 group(s); g1: transient: 503 server_error (2x)" in \
        render_status(status)
    await record_check(redis, "travtus", "g1")
    [_, view] = await ops.drift()
    assert (view.failing, view.failures) == (0, [])


async def test_bridge_status_shows_each_targets_last_pass_and_its_findings(
    ops: Operations, redis: Redis
) -> None:
    await redis.sadd(ks().GROUPS, "g1")
    await record_check(redis, "rentix", "g1", [("apt-1", "drift", "price")],
                       repaired=("drift",))
    await record_check(redis, "rentix", "", [("#7", "unknown", UNLINKED)])
    status = await ops.status()
    lines = render_status(status)
    assert "  reconcile: last full pass 0s ago: found 1 drift, 1 unknown; repaired 1 drift" \
        in lines
    assert "    #7 (whole portal): " + UNLINKED in lines
    assert "  reconcile: no full pass yet (0 of 1 checked)" in lines  # travtus
    drift = status.targets["rentix"].drift
    assert drift.last_pass is not None and drift.last_pass.finished is not None
    later = drift.last_pass.finished + 3 * 3_600_000
    assert render_drift(drift, later)[0].startswith("  reconcile: last full pass 3.0 h ago")


async def test_with_the_periodic_pass_off_the_view_says_so(redis: Redis,
                                                           redis_url: str) -> None:
    settings = make_settings(redis_url, targets=TARGETS, reconcile={"interval_s": 0})
    async with Operations(redis, settings) as ops:
        [view, _] = await ops.drift()
        assert view.interval_s == 0
        assert render_drift(view, now_ms()) == ["  reconcile: off ([reconcile] interval_s = 0)"]
