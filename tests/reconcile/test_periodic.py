"""The workers' periodic reconciliation: every group of every target checked once per
``[reconcile] interval_s``, spread evenly over it, one check of a group at a time; drift and
missing listings repaired with no operator, stale and unknown ones reported (GET /api/drift).

The end-to-end tests run real worker processes against the sandbox over HTTP with a two-second
interval; the scheduling tests run the schedulers' scripts against the test Redis."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from arq.connections import ArqRedis

from bridge import constants as k
from bridge import tenancy
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.portals import TravtusAdapter
from bridge.reconcile import schedule
from bridge.reconcile.compare import GroupCheck
from bridge.reconcile.records import Records
from bridge.sandbox.app import SandboxSettings
from bridge.settings import Settings
from tests.conftest import make_settings
from tests.support import crm
from tests.support.stack import Stack, running_stack
from workers.scheduler import ReconcileScheduler

RENTIX = {"Authorization": "ApiKey sandbox"}
INTERVAL_S = 2
# Reads fast enough for a pass every two seconds (the sandbox's own limit above the bridge's).
SANDBOX = SandboxSettings(rentix_per_minute=3000)
RENTIX_PER_MINUTE = 2400


def fast_stack(redis_url: str, tmp_path: Path, interval_s: int = INTERVAL_S,
               workers: int = 1) -> contextlib.AbstractContextManager[Stack]:
    return running_stack(redis_url, tmp_path, workers=workers, sandbox_settings=SANDBOX,
                         rentix_per_minute=RENTIX_PER_MINUTE,
                         reconcile={"interval_s": interval_s, "read_share": 0.5})


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    with fast_stack(redis_url, tmp_path) as running:
        yield running


def deliver(stack: Stack, group: str, count: int) -> None:
    for i in range(count):
        stack.post(crm.upsert(group, f"{group}-{i}", 1))
    stack.wait(lambda: len(stack.travtus_listings(group)) == count
               and len([r for r in stack.rentix_listings() if r.startswith(f"{group}-")])
               == count, what="delivery to both portals")


def drift(stack: Stack) -> dict[str, dict[str, Any]]:
    answer = stack.bridge.get("/api/drift")
    assert answer.status_code == 200, answer.text
    return {view["target"]: view for view in answer.json()["drift"]}


def repaired(view: dict[str, Any], kind: str) -> int:
    last = view["last_pass"]["repaired"][kind] if view["last_pass"] else 0
    return int(last + view["current"]["repaired"][kind])


@pytest.mark.processes
def test_hand_edits_on_both_portals_are_repaired_by_the_workers_alone(stack: Stack) -> None:
    deliver(stack, "hand", 2)
    stack.wait(lambda: all(v["last_pass"] for v in drift(stack).values()), timeout=20,
               what="a full pass on both targets")
    # An agent edits the price on Rentix, and the deposit on Travtus, by hand.
    answer = stack.sandbox.put("/rentix/api/v1/listings", headers=RENTIX,
                               json={"externalId": "hand-0", "announcementValue": 999})
    assert answer.status_code == 200, answer.text
    edited = TravtusAdapter("travtus", "http://127.0.0.1:9", "http://127.0.0.1:9/t", "i",
                            "s").map_listing(crm.listing("hand-1", 1, deposit=1))
    answer = stack.sandbox.post("/_sandbox/travtus/listings",
                                json={"group": "hand", "listings": [edited]})
    assert answer.status_code == 200, answer.text
    assert stack.rentix_listings()["hand-0"]["formData"]["announcementValue"] == 999

    # Each target's repair is seen once recorded: a pass's figures roll over every interval
    # (faster when checks that fell behind catch up), so they are watched from the edit on,
    # while the portals are, and the two targets' need not show at the same moment.
    seen: set[str] = set()

    def recorded() -> bool:
        views = drift(stack)
        assert views["rentix"]["failing"] == 0 and views["travtus"]["failing"] == 0
        seen.update(t for t in ("rentix", "travtus") if repaired(views[t], "drift") >= 1)
        return len(seen) == 2

    def repaired_on_the_portals() -> bool:
        recorded()  # the figures are watched meanwhile
        return bool(stack.rentix_listings()["hand-0"]["formData"]["announcementValue"] == 500
                    and stack.travtus_listings("hand")["hand-1"]["lease_terms"][0]["deposit"]
                    == 500)

    stack.wait(repaired_on_the_portals, timeout=20, what="both hand edits repaired")
    stack.wait(recorded, timeout=30, what="the repairs recorded")


@pytest.mark.processes
def test_a_hand_made_listing_is_listed_as_unknown_and_never_touched(stack: Stack) -> None:
    deliver(stack, "known", 1)
    made = stack.sandbox.post("/_sandbox/rentix/listings", json={"listings": [crm.hand_made()]})
    assert made.status_code == 200, made.text
    [portal_id] = made.json()["ids"]
    stack.sandbox.post("/_sandbox/travtus/listings", json={"group": "known", "listings": [
        {"external_reference": "by-hand", "unit_type": "apartment", "number_of_bathrooms": 1,
         "listing_url": "https://x.example/by-hand"}]})
    seeded = len(stack.journal())

    def listed() -> dict[str, dict[str, Any]] | None:
        # The count and the list are read one after the other: wait for both.
        views = drift(stack)
        found = {(u["group"], u["ref"]) for view in views.values() for u in view["unknown"]}
        counted = all(view["unknown_listings"] == 1 for view in views.values())
        return views if counted and {("", f"#{portal_id}"), ("known", "by-hand")} <= found \
            else None

    views = stack.wait(listed, timeout=20, what="both unknown listings in GET /api/drift")
    [rentix] = views["rentix"]["unknown"]
    assert rentix["detail"] == "made on the portal, not linked to any CRM listing"
    stack.wait(lambda: all(v["last_pass"] for v in drift(stack).values()), timeout=20,
               what="a full pass on both targets")
    assert all(r["method"] == "GET" or r["path"].endswith("/listings/find/")
               or r["path"].endswith("/oauth2/token") for r in stack.journal()[seeded:])
    assert "by-hand" in stack.travtus_listings("known")
    assert any(item["id"] == portal_id
               for item in stack.sandbox.get("/_sandbox/rentix/listings").json()["items"])


@pytest.mark.processes
def test_a_failing_check_is_retried_with_backoff_and_shown_meanwhile(stack: Stack) -> None:
    deliver(stack, "flaky", 1)
    fault = stack.sandbox.post("/_sandbox/faults", json={
        "portal": "rentix", "method": "GET", "path": "/listings/external", "status": 503})
    assert fault.status_code in (200, 201), fault.text
    failing = stack.wait(lambda: drift(stack)["rentix"]["failures"], timeout=20,
                         what="the failing check in GET /api/drift")
    assert failing[0]["group"] == "flaky" and "transient" in failing[0]["error"]
    stack.wait(lambda: drift(stack)["rentix"]["failures"][0]["attempts"] >= 2, timeout=20,
               what="a second attempt")
    stack.sandbox.delete("/_sandbox/faults")
    stack.wait(lambda: drift(stack)["rentix"]["failing"] == 0, timeout=20,
               what="the check to succeed once the portal answers")


@pytest.mark.processes
def test_with_interval_zero_no_check_is_scheduled_or_run(redis_url: str, tmp_path: Path
                                                        ) -> None:
    with fast_stack(redis_url, tmp_path, interval_s=0) as stack:
        deliver(stack, "quiet", 2)
        settled = len(stack.journal())
        # Absence can only be watched: a 2 s interval would have read every group twice by now.
        time.sleep(5)
        assert stack.journal()[settled:] == []
        views = drift(stack)
        assert views["rentix"]["interval_s"] == 0 and views["rentix"]["last_pass"] is None
    client = sync_redis.Redis.from_url(redis_url)
    try:
        assert client.keys("lb:{t:default}:reconcile:*") == []
    finally:
        client.close()


@pytest.mark.processes
def test_two_workers_never_check_one_group_at_once(redis_url: str, tmp_path: Path) -> None:
    groups = ("a", "b", "c")
    with fast_stack(redis_url, tmp_path, workers=2) as stack:
        for group in groups:
            deliver(stack, group, 2)
        # Slow reads: a check lasts long enough for a second one to start if anything let it.
        for path in ("/listings/external", "/listings/find/"):
            portal = "rentix" if "external" in path else "travtus"
            slow = stack.sandbox.post("/_sandbox/faults", json={
                "portal": portal, "path": path, "latency_ms": 300})
            assert slow.status_code in (200, 201), slow.text
        settled = len(stack.journal())

        def checks() -> dict[tuple[str, str], list[float]]:
            """When each group's check read each portal: Rentix by external ID (each listing),
            Travtus by a find of the group."""
            times: dict[tuple[str, str], list[float]] = defaultdict(list)
            for r in stack.journal()[settled:]:
                if r["method"] == "GET" and r["path"].startswith("/listings/external/"):
                    times[("rentix", r["path"].rsplit("/", 1)[1])].append(_at(r))
                elif r["path"].endswith("/listings/find/"):
                    times[("travtus", r["body"]["group_external_ref"])].append(_at(r))
            return times

        def three_each() -> bool:
            times = checks()
            return len(times) == 9 and all(len(t) >= 3 for t in times.values())

        stack.wait(three_each, timeout=30, what="three checks of every group on both portals")
        for key, at in checks().items():
            gaps = [b - a for a, b in zip(sorted(at), sorted(at)[1:], strict=False)]
            # A second check at once would read within milliseconds; checks come once per
            # interval (a scheduler tick, 1 s, may take one a little late).
            assert min(gaps) > 0.5, (key, gaps)
        assert not [r for r in stack.journal()[settled:] if r["method"] in ("PUT", "DELETE")]
        logs = _stop(stack)
    assert all("reconcile_group" in log for log in logs), "both workers ran checks"


# -- the schedule, against the test Redis --

TARGETS = [
    {"name": "rentix", "kind": "rentix", "base_url": "http://127.0.0.1:9/rentix/api/v1",
     "api_key": "k"},
    {"name": "travtus", "kind": "travtus", "base_url": "http://127.0.0.1:9/travtus",
     "token_url": "http://127.0.0.1:9/travtus/oauth2/token", "client_id": "c",
     "client_secret": "s"},
]
HOUR_MS = 3_600_000


@pytest.fixture
async def arq_redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    client = ArqRedis.from_url(redis_url)
    yield client
    await client.aclose()


def hourly(redis_url: str) -> Settings:
    return make_settings(redis_url, targets=TARGETS, reconcile={"interval_s": 3600})


async def test_a_sweep_schedules_every_group_evenly_over_the_interval_after_a_grace(
    arq_redis: ArqRedis, redis_url: str
) -> None:
    groups = [f"group-{n}" for n in range(20_000)]
    await arq_redis.sadd(ks().GROUPS, *groups)
    scheduler = ReconcileScheduler(arq_redis, hourly(redis_url), sweep_batch=1_000)
    started = now_ms()
    assert await scheduler.sweep() == 2 * len(groups) + 1  # and Rentix's whole portal
    ended = now_ms()
    grace = schedule.grace_ms(HOUR_MS)
    for target in ("rentix", "travtus"):
        due = dict(await arq_redis.zrange(f"{ks().RECONCILE_DUE}{target}", 0, -1, withscores=True))
        assert len(due) == len(groups) + (target == "rentix")
        deciles = [0] * 10
        for raw, score in due.items():
            group, at = raw.decode(), int(score)
            # The Lua script's slot is the Python one: the group's phase of the interval.
            assert (at - schedule.phase_ms(target, group, HOUR_MS)) % HOUR_MS == 0
            assert started + grace <= at < ended + grace + HOUR_MS
            deciles[min((at - started - grace) * 10 // HOUR_MS, 9)] += 1
        # 2,000 a tenth of the hour, give or take chance (a standard deviation is about 42).
        assert all(1_800 < n < 2_200 for n in deciles), deciles
    before = await arq_redis.zrange(f"{ks().RECONCILE_DUE}travtus", 0, -1, withscores=True)
    await arq_redis.sadd(ks().GROUPS, "new-group")
    assert await scheduler.sweep() == 2  # only what is not scheduled yet
    after = dict(await arq_redis.zrange(f"{ks().RECONCILE_DUE}travtus", 0, -1, withscores=True))
    assert all(after[g] == score for g, score in before)


async def test_the_next_check_is_due_one_interval_after_the_last(redis_url: str) -> None:
    first = schedule.first_due_ms("travtus", "g", HOUR_MS, 1_000_000)
    assert schedule.next_due_ms("travtus", "g", HOUR_MS, first) == first + HOUR_MS
    assert schedule.next_due_ms("travtus", "g", HOUR_MS, first + 5_000) == first + HOUR_MS
    # A check that ran more than an interval late keeps the group's phase.
    assert schedule.next_due_ms("travtus", "g", HOUR_MS, first + HOUR_MS + 1) == \
        first + 2 * HOUR_MS


async def test_due_checks_are_taken_once_and_at_most_two_at_a_time_per_target(
    arq_redis: ArqRedis, redis_url: str
) -> None:
    now = now_ms()
    for target in ("rentix", "travtus"):
        await arq_redis.zadd(f"{ks().RECONCILE_DUE}{target}",
                             {f"g{n}": now - 1_000 * (5 - n) for n in range(5)})
    scheduler = ReconcileScheduler(arq_redis, hourly(redis_url))
    assert await scheduler.take("travtus") == 2
    assert await scheduler.take("travtus") == 0  # two running: the rest wait their turn
    assert await scheduler.take("rentix") == 2
    jobs = await arq_redis.queued_jobs(queue_name=k.QUEUE)
    taken = sorted((j.args[0], j.args[1]) for j in jobs)
    assert taken == [("rentix", "g0"), ("rentix", "g1"), ("travtus", "g0"), ("travtus", "g1")]
    for job in jobs:  # each job carries its ticket: the group's due time as taken
        score = await arq_redis.zscore(f"{ks().RECONCILE_DUE}{job.args[0]}", job.args[1])
        assert job.args[2] == int(score) == pytest.approx(now + k.RECONCILE_RETAKE_MS, abs=5_000)
    # Once those checks end (their running entries go), the next ones due are taken.
    await arq_redis.delete(f"{ks().RECONCILE_RUNNING}travtus")
    assert await scheduler.take("travtus") == 2
    assert {g.decode() for g in await arq_redis.zrange(f"{ks().RECONCILE_RUNNING}travtus", 0, -1)
            } == {"g2", "g3"}


async def test_one_check_of_a_group_at_a_time_and_only_it_records(arq_redis: ArqRedis) -> None:
    records = Records(arq_redis)
    await arq_redis.sadd(ks().GROUPS, "g")
    token = await records.acquire("travtus", "g")
    assert token is not None
    assert await records.acquire("travtus", "g") is None  # the same group: refused
    assert await records.acquire("rentix", "g") is not None  # another target: its own check
    check = GroupCheck("travtus", "g")
    assert await records.record("stale-token", check, [], now_ms() + 1_000, False) == 0
    assert await arq_redis.hget(f"{ks().RECONCILE_CHECKS}travtus", "g") is None
    assert await records.record(token, check, [], now_ms() + 1_000, False) == 2  # a full pass
    assert await records.acquire("travtus", "g") is not None  # released by the record


async def test_failed_checks_back_off_doubling_within_the_interval(arq_redis: ArqRedis
                                                                 ) -> None:
    records = Records(arq_redis)
    delays = []
    for _ in range(4):
        token = await records.acquire("travtus", "g")
        assert token is not None
        delays.append(await records.failed(token, "travtus", "g", "transient: 503", HOUR_MS))
    assert delays == [30_000, 60_000, 120_000, 240_000]
    token = await records.acquire("travtus", "g")
    assert token is not None
    assert await records.failed(token, "travtus", "g", "transient: 503", 100_000) == 100_000
    total, [failed] = await records.failures("travtus", 10)
    assert (total, failed.group, failed.attempts, failed.error) == (1, "g", 5, "transient: 503")


def _at(request: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(request["at"].replace("Z", "+00:00")).timestamp()


def _stop(stack: Stack) -> list[str]:
    stack.stop_workers()
    return [stack.log_of(w) for w in stack.workers]


async def test_a_paused_targets_checks_wait_for_its_resume(arq_redis: ArqRedis,
                                                           redis_url: str) -> None:
    await arq_redis.zadd(f"{ks().RECONCILE_DUE}travtus", {"g": now_ms() - 1_000})
    await arq_redis.hset(f"{ks().TARGET}travtus", "paused", "portal maintenance")
    scheduler = ReconcileScheduler(arq_redis, hourly(redis_url))
    assert await scheduler.take_due() == 0
    await arq_redis.hdel(f"{ks().TARGET}travtus", "paused")
    assert await scheduler.take_due() == 1


async def test_two_tenants_checks_of_one_group_name_fall_due_apart_and_lua_agrees(
    arq_redis: ArqRedis, redis_url: str
) -> None:
    """1,000 tenants' whole-portal checks (group "") must not all fall due in one
    millisecond: the tenant is part of what the phase hashes, in Python and in the sweep."""
    phases = set()
    for tenant in ("north", "south", "west"):
        with tenancy.use(tenant):
            await arq_redis.sadd(ks().GROUPS, "west-branch")
            scheduler = ReconcileScheduler(arq_redis, hourly(redis_url))
            await scheduler.sweep()
            due = await arq_redis.zscore(f"{ks().RECONCILE_DUE}travtus", "west-branch")
            phase = schedule.phase_ms("travtus", "west-branch", HOUR_MS)
            assert due is not None and (int(due) - phase) % HOUR_MS == 0
            phases.add(phase)
    assert len(phases) == 3
