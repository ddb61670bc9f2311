"""The sender's PUT lane (issue 30, part 1): while bulks drain the outbox, single PUTs spend the
general budget the bulks leave free, within both budgets, and every write keeps its channel
and its key for every retry; against the session's Redis and the sandbox over loopback HTTP,
in process."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.outbox import Outbox, PutRecord
from bridge.settings import Settings
from tests.conftest import make_settings
from tests.delivery.test_bulk import (
    TARGET,
    accepted,
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


def lane_settings(redis_url: str, sandbox_url: str, **rentix: Any) -> Settings:
    """The sender with its PUT lane (the default), turns of 3 s."""
    return make_settings(redis_url, targets=[{
        "name": TARGET, "kind": "rentix", "base_url": f"{sandbox_url}/rentix/api/v1",
        "api_key": "sandbox", **rentix}],
        delivery={"retry_base_s": 0.2, "retry_max_s": 1.0, "lease_ms": 2_000,
                  "job_timeout_s": 5})


def writes(journal: httpx.Client) -> list[dict[str, Any]]:
    return [r for r in journal.get("/_sandbox/journal", params={"portal": "rentix"}).json()[
        "requests"] if r["method"] in ("PUT", "POST", "DELETE")]


def puts(journal: httpx.Client) -> list[dict[str, Any]]:
    return [r for r in writes(journal) if r["method"] == "PUT"]


def in_bulks(journal: httpx.Client) -> list[str]:
    return [op["externalId"] for r in bulks(journal) for op in r["body"]["operations"]]


async def drain_all(sender: Any, client: Any, spec: Any, turns: int = 6) -> None:
    for _ in range(turns):
        await sender.drain(spec)
        if await Outbox(client).depth(TARGET) == 0:
            return
        due = await client.zscore(ks().SENDERS, TARGET)
        if due is not None and due > now_ms():
            await asyncio.sleep(min(3.0, (due - now_ms()) / 1000))


async def test_the_lane_spends_the_spare_general_budget_within_both_budgets(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client  # noqa: F811
) -> None:
    entries = [write(f"apt-{i:03}", f"g{i % 4}", 500 + i) for i in range(560)]
    async with sender_for(redis_url, lane_settings(redis_url, sandbox_url)) as (
            sender, client, spec):
        assert spec.put_lane
        await put(client, entries, at=now_ms() - 1_000)
        await drain_all(sender, client, spec)
        calls = writes(sandbox)
        assert [r for r in calls if r["status"] == 429] == []  # the sandbox enforces 300/30
        by_put = [r["body"]["externalId"] for r in puts(sandbox)]
        assert len(by_put) >= 3, "the lane sent PUTs beside the bulks"
        # Each write went once, by one channel; each PUT with its intent key.
        sent = Counter([*by_put, *in_bulks(sandbox)])
        assert len(sent) == 560 and set(sent.values()) == {1}
        keys = {e.ref: e.key for e in entries}
        assert all(r["idempotency_key"] == keys[r["body"]["externalId"]]
                   for r in puts(sandbox))
        assert await accepted(client) == {e.ref: e.digest for e in entries}
        held = portal(sandbox)
        assert all(held[e.ref]["announcementValue"] == 500 + i for i, e in enumerate(entries))
        assert await client.exists(ks().OUTBOX_PUTS + TARGET, ks().OUTBOX_BATCH + TARGET,
                                   ks().OUTBOX_GROUPS + TARGET) == 0
        assert await client.hlen(f"{ks().INTENT}{TARGET}") == 0  # type: ignore[misc]
        # Both budgets, as the portal reported them, never ran out.
        state = await client.hgetall(f"{ks().TARGET}{TARGET}")  # type: ignore[misc]
        assert b"budget:general" in state and b"budget:bulk" in state


async def test_a_put_that_timed_out_goes_again_by_put_with_the_same_key_never_in_a_bulk(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client  # noqa: F811
) -> None:
    entries = [write(f"apt-{i:03}", f"g{i % 3}") for i in range(150)]
    fault(sandbox, path="/listings/bulk", latency_ms=800, count=1)  # the lane runs meanwhile
    fault(sandbox, method="PUT", path="/listings", latency_ms=1_500, count=1)
    settings = lane_settings(redis_url, sandbox_url)
    async with sender_for(redis_url, settings, http_timeout_s=0.5) as (sender, client, spec):
        await put(client, entries, at=now_ms() - 1_000)
        await drain_all(sender, client, spec)
        assert await accepted(client) == {e.ref: e.digest for e in entries}
    seen = puts(sandbox)
    count = Counter(r["body"]["externalId"] for r in seen)
    [first] = [ref for ref, n in count.items() if n >= 2]  # the PUT that timed out, and again
    again = [r for r in seen if r["body"]["externalId"] == first]
    key = {e.ref: e.key for e in entries}[first]
    assert {r["idempotency_key"] for r in again} == {key}
    assert first not in in_bulks(sandbox)
    applied = Counter([*(r["body"]["externalId"] for r in seen if r["status"] == 200
                         and not r["replayed"]),
                       *(op["externalId"] for r in bulks(sandbox) if r["status"] == 200
                         and not r["replayed"] for op in r["body"]["operations"])])
    assert set(applied.values()) == {1} and len(applied) == 150


async def test_a_put_cut_off_by_a_crash_goes_by_put_with_its_key_even_with_the_lane_off(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client  # noqa: F811
) -> None:
    entries = [write(f"apt-{i:03}", f"g{i % 2}") for i in range(120)]
    fault(sandbox, path="/listings/bulk", latency_ms=1_000, count=1)
    fault(sandbox, method="PUT", path="/listings", latency_ms=3_000, count=1)
    async with sender_for(redis_url, lane_settings(redis_url, sandbox_url)) as (
            sender, client, spec):
        await put(client, entries, at=now_ms() - 1_000)
        draining = asyncio.create_task(sender.drain(spec))
        async def both_out() -> bool:
            return bool(await client.hlen(ks().OUTBOX_PUTS + TARGET)  # type: ignore[misc]
                        and await client.exists(ks().OUTBOX_BATCH + TARGET))

        await wait_until_async(both_out, within_s=5)
        await asyncio.sleep(0.3)  # the PUT and the bulk are out
        draining.cancel()  # the worker dies
        with pytest.raises(asyncio.CancelledError):
            await draining
        taken = await Outbox(client).puts(TARGET)
        batch = await Outbox(client).in_flight(TARGET)
        assert len(taken) == 1 and batch is not None
        ref, key = taken[0].op.ref, taken[0].op.key
        assert ref not in {op.ref for op in batch.ops}
    # The next sender has the lane off: the bulk goes again as it was, the PUT by PUT.
    off = lane_settings(redis_url, sandbox_url, put_lane=False)
    async with sender_for(redis_url, off) as (sender, client, spec):
        await client.delete(ks().SENDER + TARGET)  # the dead worker's lease lapsed
        await drain_all(sender, client, spec, turns=15)
        assert await accepted(client) == {e.ref: e.digest for e in entries}
    seen = bulks(sandbox)
    assert [r["idempotency_key"] for r in seen[:2]] == [batch.key] * 2
    assert [op["externalId"] for op in seen[1]["body"]["operations"]] == [
        op.ref for op in batch.ops]
    assert ref not in in_bulks(sandbox)
    assert {r["idempotency_key"] for r in puts(sandbox) if r["body"]["externalId"] == ref} == {
        key}
    assert len([r for r in puts(sandbox) if r["body"]["externalId"] == ref]) >= 2


async def test_a_bulk_that_timed_out_goes_again_as_it_was_while_the_lane_runs(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client  # noqa: F811
) -> None:
    entries = [write(f"apt-{i:03}", f"g{i % 3}") for i in range(130)]
    fault(sandbox, path="/listings/bulk", latency_ms=1_500, count=1)
    settings = lane_settings(redis_url, sandbox_url)
    async with sender_for(redis_url, settings, http_timeout_s=0.5) as (sender, client, spec):
        await put(client, entries, at=now_ms() - 1_000)
        await sender.drain(spec)
        in_flight = await Outbox(client).in_flight(TARGET)
        assert in_flight is not None and in_flight.attempts >= 1
        await drain_all(sender, client, spec)
        assert await accepted(client) == {e.ref: e.digest for e in entries}
    seen = bulks(sandbox)
    retried = [r for r in seen if r["idempotency_key"] == in_flight.key]
    assert len(retried) >= 2
    assert all([op["externalId"] for op in r["body"]["operations"]] == [
        op.ref for op in in_flight.ops] for r in retried)
    by_put = {r["body"]["externalId"] for r in puts(sandbox)}
    assert not by_put & {op.ref for op in in_flight.ops}
    assert [r for r in writes(sandbox) if r["status"] == 429] == []


async def test_with_the_lane_off_bulks_alone_drain_the_outbox(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client  # noqa: F811
) -> None:
    entries = [write(f"apt-{i:03}", f"g{i % 4}") for i in range(250)]
    off = lane_settings(redis_url, sandbox_url, put_lane=False)
    async with sender_for(redis_url, off) as (sender, client, spec):
        await put(client, entries, at=now_ms() - 1_000)
        assert await sender.drain(spec) == f"{TARGET}: 250 operation(s) sent"
        assert puts(sandbox) == []
        assert [len(r["body"]["operations"]) for r in bulks(sandbox)] == [100, 100, 50]
        assert len(await accepted(client)) == 250


async def test_bulks_that_leave_the_lane_no_budget_leave_its_puts_at_the_general_rate(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client  # noqa: F811
) -> None:
    """bulk_per_minute = requests_per_minute: the bulks' slots take the whole general budget.
    The lane takes no write, and the PUTs it took before (a worker that ran with other
    settings) go again at the general rate: once a minute, as the lane's own bucket would
    allow, they would wait for minutes."""
    settings = lane_settings(redis_url, sandbox_url, requests_per_minute=600,
                             bulk_per_minute=600)
    taken = [write(f"apt-{i:02}", "g1") for i in range(8)]
    waiting = [write(f"new-{i:02}", "g2") for i in range(30)]
    async with sender_for(redis_url, settings) as (sender, client, spec):
        assert spec.lane_per_minute == 0
        await put(client, [*taken, *waiting], at=now_ms() - 1_000)
        for op in taken:  # taken for PUTs and recorded, never answered
            await client.hset(ks().OUTBOX_PUTS + TARGET, op.ref,  # type: ignore[misc]
                              PutRecord(op, now_ms() - 1_000).json())
        await drain_all(sender, client, spec, turns=3)
        assert await accepted(client) == {e.ref: e.digest for e in [*taken, *waiting]}
    assert sorted(r["body"]["externalId"] for r in puts(sandbox)) == [e.ref for e in taken]
    assert sorted(in_bulks(sandbox)) == [e.ref for e in waiting]


# A flush's own PUTs wait for the general budget at most MAX_INLINE_WAIT_MS (2 s) in all: at
# 60 a minute their burst (4, one less than a bulk's) goes at once, then one a second; twelve
# would hold the group's lease (and Travtus) ~8 s. With bulks on, the rest join the outbox.
slow_puts = bridge_fixture(requests_per_minute=60, bulk_per_minute=2, bulk_after_s=60,
                           put_lane=False)


async def test_a_flushs_puts_wait_two_seconds_in_all_then_the_rest_go_by_bulk(
    slow_puts: Bridge,
) -> None:
    bridge = slow_puts
    refs = [f"apt-{i:02}" for i in range(12)]
    for ref in refs:
        await bridge.post(crm.upsert(GROUP, ref, 1))
    started = time.monotonic()
    await bridge.flush()
    took = time.monotonic() - started
    puts = [r for r in await bridge.journal()
            if r["portal"] == "rentix" and r["method"] == "PUT" and r["status"] == 200]
    waiting = await Outbox(bridge.redis).entries("rentix")
    assert 5 <= len(puts) <= 7, len(puts)  # 4 at once, then one a second for 2 s
    assert sorted([r["body"]["externalId"] for r in puts] + [e.ref for e in waiting]) == refs
    assert took < 4.5, took
    await bridge.drain()
    assert await bridge.shown_on_rentix() == set(refs)
