"""Fair inside a target (issue 30, part 3): the sender takes the outbox's writes round-robin
across groups (oldest first within a group), so one group's big change never holds another
group's small one back by more than a bulk's round trip; against the session's Redis and the
sandbox over loopback HTTP, in process."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest
from redis.asyncio import Redis

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.outbox import Outbox, Take, lane_key
from tests.delivery.test_bulk import (
    TARGET,
    accepted,
    bridge_settings,
    bulks,
    fault,
    put,
    sandbox,  # noqa: F401 (a fixture)
    sender_for,
    wait_until_async,
    write,
)
from tests.support.servers import wait_until

pytestmark = pytest.mark.flows


def refs_of(request: dict) -> list[str]:  # type: ignore[type-arg]
    return [op["externalId"] for op in request["body"]["operations"]]


async def test_a_small_groups_write_goes_in_the_next_bulk_behind_a_big_groups_backlog(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client  # noqa: F811
) -> None:
    big = [write(f"big-{i:04}", "big", 500 + i) for i in range(500)]
    fault(sandbox, path="/listings/bulk", latency_ms=600, count=1)
    # Room for the six bulks in one turn: at the documented 30 a minute the sender spreads
    # them over the window (budget.paced_until), beyond this test's one drain.
    await asyncio.to_thread(sandbox.post, "/_sandbox/rate-limits",
                            json={"rentix_bulk_per_minute": 600})
    async with sender_for(redis_url, bridge_settings(redis_url, sandbox_url,
                                                     bulk_per_minute=600)) as (
            sender, client, spec):
        await put(client, big, at=now_ms() - 10_000)
        draining = asyncio.create_task(sender.drain(spec))
        await wait_until_async(lambda: client.exists(f"{ks().OUTBOX_BATCH}{TARGET}"))
        small = write("small-1", "small")
        await put(client, [small])  # while the big group's first bulk is out
        assert await draining == f"{TARGET}: 501 operation(s) sent"
        seen = bulks(sandbox)
        assert refs_of(seen[0]) == [e.ref for e in big[:100]]
        # Round-robin: the small group's one write goes second in the very next bulk.
        assert refs_of(seen[1])[:3] == ["big-0100", "small-1", "big-0101"]
        sent = Counter(ref for r in seen for ref in refs_of(r))
        assert set(sent.values()) == {1} and len(sent) == 501
        assert len(await accepted(client)) == 501
        # Nothing left behind: the lanes and their index go with their last entries.
        assert await Outbox(client).depth(TARGET) == 0
        assert await client.exists(ks().OUTBOX_GROUPS + TARGET, lane_key(TARGET, "big"),
                                   lane_key(TARGET, "small")) == 0


async def test_a_bulk_takes_one_write_of_each_group_in_turn_oldest_first(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client  # noqa: F811
) -> None:
    async with sender_for(redis_url, bridge_settings(redis_url, sandbox_url)) as (
            sender, client, spec):
        now = now_ms()
        await put(client, [write(f"a-{i}", "ga") for i in range(3)], at=now - 3_000)
        await put(client, [write(f"b-{i}", "gb") for i in range(2)], at=now - 2_000)
        await put(client, [write("c-0", "gc")], at=now - 1_000)
        await sender.drain(spec)
        seen = bulks(sandbox)
        assert [refs_of(r) for r in seen] == [["a-0", "b-0", "c-0", "a-1", "b-1", "a-2"]]


async def test_with_more_groups_than_a_bulk_holds_the_groups_left_out_go_first_next(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client  # noqa: F811
) -> None:
    async with sender_for(redis_url, bridge_settings(redis_url, sandbox_url)) as (
            sender, client, spec):
        now = now_ms()
        for g in range(150):
            await put(client, [write(f"g{g:03}-{i}", f"g{g:03}") for i in range(2)],
                      at=now - 5_000 + g)
        await sender.drain(spec)
        seen = [refs_of(r) for r in bulks(sandbox)]
        assert [len(r) for r in seen] == [100, 100, 100]
        assert seen[0] == [f"g{g:03}-0" for g in range(100)]
        # The 50 groups the first bulk had no room for go first in the second.
        assert seen[1][:50] == [f"g{g:03}-0" for g in range(100, 150)]
        assert sorted(ref for r in seen for ref in r) == sorted(
            f"g{g:03}-{i}" for g in range(150) for i in range(2))


async def test_a_retried_bulk_keeps_its_operations_and_the_fair_order_goes_on_after_it(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client  # noqa: F811
) -> None:
    big = [write(f"big-{i:03}", "big") for i in range(150)]
    fault(sandbox, path="/listings/bulk", latency_ms=1_500, count=1)
    settings = bridge_settings(redis_url, sandbox_url)
    async with sender_for(redis_url, settings, http_timeout_s=0.5) as (sender, client, spec):
        await put(client, big, at=now_ms() - 5_000)
        assert await sender.drain(spec) == f"{TARGET}: 0 operation(s) sent"
        in_flight = await Outbox(client).in_flight(TARGET)
        assert in_flight is not None
        await put(client, [write("small-1", "small")])  # while the bulk waits to go again
        wait_until(lambda: len(bulks(sandbox)) == 1, timeout=5, what="the slow bulk answered")
        await client.zadd(ks().SENDERS, {TARGET: now_ms()})
        await sender.drain(spec)
        seen = bulks(sandbox)
        # The retry carries exactly its operations, with its key; the next bulk is fair.
        assert [r["idempotency_key"] for r in seen[:2]] == [in_flight.key] * 2
        assert refs_of(seen[1]) == refs_of(seen[0]) == [op.ref for op in in_flight.ops]
        assert refs_of(seen[2])[:2] == ["big-100", "small-1"]
        applied = Counter(ref for r in seen if not r["replayed"] for ref in refs_of(r))
        assert set(applied.values()) == {1} and len(applied) == 151
        assert len(await accepted(client)) == 151


async def test_the_puts_after_a_bulk_go_round_the_groups_in_the_order_it_served_them(
    redis_url: str
) -> None:
    async with Redis.from_url(redis_url) as client:
        now = now_ms()
        await put(client, [write(f"{g}-{i}", g) for g in "abc" for i in range(3)], at=now - 9)
        # Turns as earlier takes left them: c served longest ago, then a, then b.
        await client.zadd(ks().OUTBOX_GROUPS + TARGET, {"c": now - 3, "a": now - 2, "b": now - 1})
        await client.set(ks().SENDER + TARGET, "token")
        take = Take(client)
        bulk = await take(TARGET, "token", now, 3)
        assert [e.group for e in bulk or []] == ["c", "a", "b"]
        # Every group was served at the same millisecond: the PUTs that follow take them in
        # the bulk's order, not by name (a, b, c: the first groups by name would get every
        # PUT between two bulks).
        puts = [await take(TARGET, "token", now + 1 + i, 1, put=True,
                           exclude=[e.ref for e in bulk or []]) for i in range(3)]
        assert [p[0].group for p in puts if p] == ["c", "a", "b"]
        await client.delete(ks().SENDER + TARGET)
