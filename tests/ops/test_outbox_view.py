"""A per-listing target's outbox as the operator sees it (Targets page, /api, ``bridge status``):
its depth, the bulk request in flight, the two budgets the portal last reported and the expected
time to drain, read from the test Redis as the flush and the sender write them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from bridge import counters
from bridge.cli.operate import render_status
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.dashboard.metrics import Part, Snapshot
from bridge.delivery import budget
from bridge.delivery.budget import Bucket, Budget
from bridge.delivery.outbox import Queued, compose, put_commands
from bridge.ops import Operations
from bridge.ops.models import OutboxView, ReportedBudget
from tests.conftest import make_settings
from tests.ops.conftest import TARGETS

SLACK_MS = 5_000  # how long a test may take between writing the figures and reading them


def entry(ref: str, at: int) -> Queued:
    return Queued(ref=ref, group=f"g-{ref[-1]}", operation="upsert",
                  payload={"externalId": ref}, digest=f"d-{ref}", base="", key=f"i-{ref}",
                  received_ms=at, queued_at=at)


async def put(redis: Redis, target: str, entries: list[Queued], now: int) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        for command in put_commands(target, entries, now):
            pipe.execute_command(*command)
        await pipe.execute()


async def report(redis: Redis, target: str, budgets: dict[Bucket, Budget | None]) -> None:
    command = budget.command(target, budgets)
    assert command is not None
    await redis.execute_command(*command)


async def send(redis: Redis, target: str, ops: list[Queued], at: int) -> None:
    """Record a bulk request in flight, as the sender does before it sends one."""
    batch = compose(ops, at, max_ops=len(ops))
    assert batch is not None and len(batch.ops) == len(ops)
    await redis.set(ks().OUTBOX_BATCH + target, batch.json())


async def outbox(ops: Operations, target: str = "rentix") -> OutboxView | None:
    """The target's outbox in the Targets view, checked to be the one ``status`` shows (but for
    the figures that move with the clock between the two reads)."""
    view = {t.name: t for t in await ops.targets()}[target].outbox
    shown = (await ops.status()).targets[target].outbox
    assert _still(shown) == _still(view)
    return view


def _still(view: OutboxView | None) -> object:
    if view is None:
        return None
    budgets = {n: b and (b.limit, b.remaining, b.reset, b.at) for n, b in view.budgets.items()}
    return view.depth, view.in_flight, view.in_flight_since, view.bulk_per_minute, budgets


async def test_an_empty_outbox_has_nothing_waiting_and_no_budgets_reported_yet(
    ops: Operations
) -> None:
    view = await outbox(ops)
    assert view == OutboxView(depth=0, in_flight=0, in_flight_since=None, bulk_per_minute=28,
                              drain_s=0.0, budgets={"general": None, "bulk": None})
    assert list(orjson.loads(orjson.dumps(view))) == [
        "depth", "in_flight", "in_flight_since", "bulk_per_minute", "drain_s", "budgets"]
    # A group-sync target has no outbox: null in both views.
    assert await outbox(ops, "travtus") is None
    lines = render_status(await ops.status())
    assert "  outbox: empty; bulk at up to 28/min" in lines
    assert "  portal budgets: general not reported yet; bulk not reported yet" in lines
    assert sum(line.startswith("  outbox:") for line in lines) == 1  # none for travtus


async def test_waiting_writes_the_request_in_flight_and_the_reported_budgets(
    ops: Operations, redis: Redis
) -> None:
    now = now_ms()
    entries = [entry(f"apt-{i}", now) for i in range(250)]
    await put(redis, "rentix", entries, now)
    await send(redis, "rentix", entries[:100], now - 3_000)
    await report(redis, "rentix", {
        "general": Budget(300, 251, now + 30_000, now - 2_000),
        "bulk": Budget(30, 12, now + 40_000, now - 1_000)})
    view = await outbox(ops)
    assert view is not None
    assert (view.depth, view.in_flight, view.in_flight_since) == (250, 100, now - 3_000)
    # Three bulks of 100 at 28 a minute; neither budget is spent, so no wait.
    assert view.drain_s == round(3 * 60 / 28, 1) == 6.4
    general, bulk = view.budgets["general"], view.budgets["bulk"]
    assert isinstance(general, ReportedBudget) and isinstance(bulk, ReportedBudget)
    assert (general.limit, general.remaining, general.reset, general.at) == (
        300, 251, now + 30_000, now - 2_000)
    assert (bulk.limit, bulk.remaining, bulk.reset, bulk.at) == (30, 12, now + 40_000,
                                                                  now - 1_000)
    assert 30_000 - SLACK_MS < (general.resets_in_ms or 0) <= 30_000
    lines = render_status(await ops.status())
    [box, budgets] = [line for line in lines if line.startswith(("  outbox:",
                                                                 "  portal budgets:"))]
    assert box == ("  outbox: 250 waiting (100 in the bulk request in flight); "
                   "expected to drain in 6s at 28 bulk/min")
    assert budgets.startswith("  portal budgets: general 251/300, resets in ")
    assert "; bulk 12/30, resets in " in budgets and "(seen " in budgets


async def test_a_spent_bulk_budget_adds_the_wait_for_its_window(
    ops: Operations, redis: Redis
) -> None:
    now = now_ms()
    await put(redis, "rentix", [entry(f"apt-{i}", now) for i in range(150)], now)
    await report(redis, "rentix", {"general": Budget(300, 120, now + 10_000, now),
                                   "bulk": Budget(30, 0, now + 20_000, now)})
    view = await outbox(ops)
    assert view is not None
    bulks = 2 * 60 / 28  # two bulks, after the bulk window resets in 20 s
    assert 20 + bulks - SLACK_MS / 1000 <= (view.drain_s or 0) <= 20 + bulks + 0.05
    # The general budget spent until later holds the sender longer.
    await report(redis, "rentix", {"general": Budget(300, 0, now + 45_000, now)})
    view = await outbox(ops)
    assert view is not None
    assert 45 + bulks - SLACK_MS / 1000 <= (view.drain_s or 0) <= 45 + bulks + 0.05
    # A window that has ended since it was reported spent no longer holds it back.
    await report(redis, "rentix", {"general": Budget(300, 0, now - 1_000, now - 61_000),
                                   "bulk": Budget(30, 0, now - 1_000, now - 61_000)})
    view = await outbox(ops)
    assert view is not None and view.drain_s == round(bulks, 1)
    bulk = view.budgets["bulk"]
    assert bulk is not None and bulk.resets_in_ms is not None and bulk.resets_in_ms < 0
    assert "general 0/300, window reset since" in "\n".join(render_status(await ops.status()))


@pytest.fixture
async def bulk_off(redis: Redis, redis_url: str) -> AsyncIterator[Operations]:
    settings = make_settings(redis_url, targets=[{**TARGETS[0], "bulk_per_minute": 0},
                                                 TARGETS[1]])
    async with Operations(redis, settings) as operations:
        yield operations


async def test_with_bulk_off_there_is_no_drain_time(bulk_off: Operations, redis: Redis) -> None:
    now = now_ms()
    await put(redis, "rentix", [entry("apt-1", now), entry("apt-2", now)], now)
    view = await outbox(bulk_off)
    assert view is not None
    assert (view.depth, view.bulk_per_minute, view.drain_s) == (2, 0, None)
    assert orjson.loads(orjson.dumps(view))["drain_s"] is None
    assert "  outbox: 2 waiting; bulk off (bulk_per_minute = 0)" in render_status(
        await bulk_off.status())


async def scrape(ops: Operations) -> dict[str, float]:
    """The outbox gauges as /metrics renders them: {"name{labels}": value}."""
    registry = CollectorRegistry(auto_describe=False)
    part = Part("default", await ops.overview(), await ops.targets(), counters.read({}),
                (await ops.problems()).held)
    registry.register(Snapshot([part], None))
    samples = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.startswith("listing_bridge_outbox_"):
                labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items()
                                  if k != "tenant")
                samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


async def test_metrics_show_each_outbox_depth_drain_time_and_request_in_flight(
    ops: Operations, bulk_off: Operations, redis: Redis
) -> None:
    assert await scrape(ops) == {
        'listing_bridge_outbox_depth{target="rentix"}': 0,
        'listing_bridge_outbox_drain_seconds{target="rentix"}': 0,
        'listing_bridge_outbox_in_flight_age_seconds{target="rentix"}': 0}
    now = now_ms()
    entries = [entry(f"apt-{i}", now) for i in range(250)]
    await put(redis, "rentix", entries, now)
    await send(redis, "rentix", entries[:100], now - 3_000)
    shown = await scrape(ops)
    assert shown['listing_bridge_outbox_depth{target="rentix"}'] == 250
    assert shown['listing_bridge_outbox_drain_seconds{target="rentix"}'] == 6.4
    age = shown['listing_bridge_outbox_in_flight_age_seconds{target="rentix"}']
    assert 3 <= age <= 3 + SLACK_MS / 1000
    # The group-sync target has no outbox series; with bulk off there is no drain time.
    assert not any("travtus" in name for name in shown)
    assert 'listing_bridge_outbox_drain_seconds{target="rentix"}' not in await scrape(bulk_off)
