"""Rentix bulk delivery: the outbox and its sender, against the session's Redis and the sandbox
over loopback HTTP (in process: a test can hold a bulk in flight and look inside), and end to
end with real worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from redis.asyncio import Redis

from bridge import counters, stories
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery import outbox
from bridge.delivery.claims import apply_writes
from bridge.delivery.idempotency import Intent, digest, fresh_key
from bridge.delivery.ledger import Ledger, intend_writes
from bridge.delivery.outbox import Outbox, Queued
from bridge.delivery.ratelimit import RateLimiter
from bridge.delivery.sender import Sender
from bridge.portals import RentixAdapter, rentix_mapping
from bridge.portals.rentix_errors import classify
from bridge.settings import RentixTarget, Settings
from tests.conftest import make_settings
from tests.support import crm
from tests.support.servers import wait_until
from tests.support.stack import Stack, running_stack

# Real flushes in this process against the sandbox (tests/support/tiers.py).
pytestmark = pytest.mark.flows

TARGET = "rentix"


@pytest.fixture
def sandbox(sandbox_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox_url, timeout=10) as client:
        yield client


def bridge_settings(redis_url: str, sandbox_url: str, **rentix: Any) -> Settings:
    """The sender's settings; bulks alone drain the outbox unless ``put_lane=True`` (the PUT
    lane has tests of its own: test_bulk_lane.py)."""
    return make_settings(redis_url, targets=[{
        "name": TARGET, "kind": "rentix", "base_url": f"{sandbox_url}/rentix/api/v1",
        "api_key": "sandbox", "put_lane": False, **rentix}],
        delivery={"retry_base_s": 0.2, "retry_max_s": 1.0, "lease_ms": 2_000})


@contextlib.asynccontextmanager
async def sender_for(redis_url: str, settings: Settings, http_timeout_s: float = 10.0
                     ) -> AsyncIterator[tuple[Sender, Redis, RentixTarget]]:
    spec = settings.targets[0]
    assert isinstance(spec, RentixTarget)
    client = Redis.from_url(redis_url)
    adapter = RentixAdapter(TARGET, spec.base_url, spec.api_key, timeout=http_timeout_s)
    try:
        yield (Sender(client, settings.delivery, {TARGET: adapter}, Ledger(client),
                      RateLimiter(client)), client, spec)
    finally:
        await adapter.aclose()
        await client.aclose()


def write(ref: str, group: str, price: int = 500, **fields: Any) -> Queued:
    payload = rentix_mapping.map_listing(
        crm.listing(ref, price={"amount": price, "currency": "EUR", "period": "monthly"},
                    **fields), TARGET)
    return Queued(ref, group, "upsert", payload, digest(payload), "", fresh_key(), now_ms(),
                  now_ms())


async def put(client: Redis, entries: list[Queued], at: int | None = None) -> None:
    """What a flush does: record the intents, put the writes in the outbox (atomically)."""
    await apply_writes(client, [
        *intend_writes(TARGET, {e.ref: Intent(e.digest, e.base, e.key) for e in entries}),
        *outbox.put_writes(TARGET, entries, now_ms() if at is None else at)])


def bulks(sandbox: httpx.Client) -> list[dict[str, Any]]:
    return [r for r in sandbox.get("/_sandbox/journal", params={"portal": "rentix"}).json()[
        "requests"] if r["method"] == "POST" and r["path"].endswith("/listings/bulk")]


def portal(sandbox: httpx.Client) -> dict[str, dict[str, Any]]:
    items = sandbox.get("/_sandbox/rentix/listings").json()["items"]
    return {i["externalId"]: i["formData"] for i in items if i.get("externalId")}


async def accepted(client: Redis) -> dict[str, str]:
    raw = await client.hgetall(f"{ks().ACCEPTED}{TARGET}")  # type: ignore[misc]
    return {ref.decode(): orjson.loads(v)["digest"] for ref, v in raw.items()}


async def quarantined(client: Redis) -> dict[str, dict[str, Any]]:
    raw = await client.hgetall(f"{ks().QUARANTINE}{TARGET}")  # type: ignore[misc]
    return {ref.decode(): orjson.loads(v) for ref, v in raw.items()}


def fault(sandbox: httpx.Client, **spec: Any) -> None:
    assert sandbox.post("/_sandbox/faults", json={"portal": "rentix", **spec}).status_code in (
        200, 201)


# -- the sender, in process --------------------------------------------------------------------

async def test_a_backlog_from_many_groups_goes_in_bulks_of_at_most_100_each_applied(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client
) -> None:
    entries = [write(f"apt-{i:03}", f"g{i % 5}", 500 + i) for i in range(250)]
    async with sender_for(redis_url, bridge_settings(redis_url, sandbox_url)) as (
            sender, client, spec):
        await put(client, entries)
        answer = await sender.drain(spec)
        assert answer == f"{TARGET}: 250 operation(s) sent"
        seen = bulks(sandbox)
        assert [len(r["body"]["operations"]) for r in seen] == [100, 100, 50]
        assert len({r["idempotency_key"] for r in seen}) == 3
        assert {e.ref: e.digest for e in entries} == await accepted(client)
        held = portal(sandbox)
        assert {ref: held[ref]["announcementValue"] for ref in held} == {
            e.ref: 500 + i for i, e in enumerate(entries)}
        # One bulk carries listings of several groups; everything is settled.
        assert len({op["externalId"][4:] for op in seen[0]["body"]["operations"]}) == 100
        assert await Outbox(client).depth(TARGET) == 0
        assert await client.hlen(f"{ks().INTENT}{TARGET}") == 0  # type: ignore[misc]
        assert await client.zscore(ks().SENDERS, TARGET) is None
        assert await client.exists(f"{ks().OUTBOX_BATCH}{TARGET}") == 0
        # Three calls, each counted once, and each group's history tells its part.
        field = counters.PORTAL_REQUESTS.field(TARGET, "bulk", "ok")
        assert await client.hget(ks().METRICS, field) == b"3"  # type: ignore[misc]
        history = await Ledger(client).history("g3")
        assert sorted(len(a.listings) for a in history) == [10, 20, 20]


async def test_every_operations_result_counts_and_a_refusal_quarantines_only_its_listing(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.delivery.sender")
    good = [write(f"ok-{i}", "g1") for i in range(3)]
    bad = write("bad-1", "g2")
    bad = Queued(bad.ref, bad.group, "upsert", {**bad.payload, "propertyType": "castle"},
                 "d-bad", "", bad.key, bad.received_ms, bad.queued_at)
    gone = Queued("never-there", "g1", "delete", {"op": "delete", "externalId": "never-there"},
                  "d-gone", "", fresh_key(), now_ms(), now_ms())
    async with sender_for(redis_url, bridge_settings(redis_url, sandbox_url)) as (
            sender, client, spec):
        await put(client, [*good, bad, gone])
        await sender.drain(spec)
        assert len(bulks(sandbox)) == 1
        refused = await quarantined(client)
        assert list(refused) == ["bad-1"]
        assert refused["bad-1"]["group"] == "g2"
        assert refused["bad-1"]["error_type"] == "validation_failed"
        assert "propertyType must be one of" in refused["bad-1"]["message"]
        assert refused["bad-1"]["field"] == "propertyType"
        # A delete of what the portal does not hold leaves it as desired: accepted.
        assert await accepted(client) == {**{e.ref: e.digest for e in good},
                                          "never-there": "d-gone"}
        assert await Outbox(client).depth(TARGET) == 0
        trace = [stories.unpack(x) for x in await client.lrange(f"{ks().TRACE}bad-1", 0, -1)]  # type: ignore[misc]
        assert [e.get("decision") or e["kind"] for e in trace] == ["quarantined", "call"]
        # One line for the operator, about that listing alone (issue 28, item 3).
        said = [r for r in caplog.records if r.getMessage().startswith("quarantined ")]
        assert [(r.group, r.target, r.listing) for r in said] == [  # type: ignore[attr-defined]
            ("g2", TARGET, "bad-1")]


async def test_a_bulk_whose_every_operation_fails_quarantines_each_with_its_own_message(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client
) -> None:
    entries = [write("bad-a", "g1"), write("bad-b", "g1")]
    entries = [Queued(e.ref, e.group, "upsert", {**e.payload, "announcementCurrency": cur},
                      f"d-{e.ref}", "", e.key, e.received_ms, e.queued_at)
               for e, cur in zip(entries, ["XXX", "YYY"], strict=True)]
    async with sender_for(redis_url, bridge_settings(redis_url, sandbox_url)) as (
            sender, client, spec):
        await put(client, entries)
        await sender.drain(spec)
        assert [r["status"] for r in bulks(sandbox)] == [422]
        refused = await quarantined(client)
        assert sorted(refused) == ["bad-a", "bad-b"]
        assert all(e["field"] == "announcementCurrency" for e in refused.values())
        assert await accepted(client) == {}
        assert await Outbox(client).depth(TARGET) == 0


async def test_a_write_replaced_while_its_bulk_is_in_flight_goes_in_the_next_bulk(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client
) -> None:
    first = write("apt-1", "g1", 500)
    newer = write("apt-1", "g1", 777)
    fault(sandbox, path="/listings/bulk", latency_ms=800, count=1)
    async with sender_for(redis_url, bridge_settings(redis_url, sandbox_url)) as (
            sender, client, spec):
        await put(client, [first])
        draining = asyncio.create_task(sender.drain(spec))
        await wait_until_async(lambda: client.exists(f"{ks().OUTBOX_BATCH}{TARGET}"))
        await put(client, [newer])  # the next flush of the group, while the bulk is out
        assert await draining == f"{TARGET}: 2 operation(s) sent"
    # The older write's answer did not take the newer one out: it went in the next bulk.
    prices = [op["announcementValue"] for r in bulks(sandbox) for op in r["body"]["operations"]]
    assert prices == [500, 777]
    assert portal(sandbox)["apt-1"]["announcementValue"] == 777
    async with sender_for(redis_url, bridge_settings(redis_url, sandbox_url)) as (_, client, _):
        assert (await accepted(client))["apt-1"] == newer.digest
        assert await Outbox(client).depth(TARGET) == 0
        assert await client.hlen(f"{ks().INTENT}{TARGET}") == 0  # type: ignore[misc]


async def test_a_bulk_that_timed_out_goes_again_with_the_same_key_and_is_applied_once(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client
) -> None:
    entries = [write(f"apt-{i}", "g1") for i in range(5)]
    fault(sandbox, path="/listings/bulk", latency_ms=1500, count=1)
    settings = bridge_settings(redis_url, sandbox_url)
    async with sender_for(redis_url, settings, http_timeout_s=0.5) as (sender, client, spec):
        await put(client, entries)
        answer = await sender.drain(spec)
        assert answer == f"{TARGET}: 0 operation(s) sent"
        in_flight = await Outbox(client).in_flight(TARGET)
        assert in_flight is not None and in_flight.attempts == 1
        due = await client.zscore(ks().SENDERS, TARGET)
        assert due is not None and due > now_ms()  # backed off
        # The sandbox finishes the first request (it holds the key); the retry replays it.
        wait_until(lambda: len(bulks(sandbox)) == 1, timeout=5, what="the slow bulk answered")
        await client.zadd(ks().SENDERS, {TARGET: now_ms()})
        await sender.drain(spec)
    seen = bulks(sandbox)
    assert [r["idempotency_key"] for r in seen] == [in_flight.key] * 2
    assert [r["replayed"] for r in seen] == [False, True]
    assert sorted(portal(sandbox)) == sorted(e.ref for e in entries)


async def test_a_sender_that_lost_its_lease_records_nothing_and_its_bulk_stays_in_flight(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client
) -> None:
    fault(sandbox, path="/listings/bulk", latency_ms=800, count=1)
    async with sender_for(redis_url, bridge_settings(redis_url, sandbox_url)) as (
            sender, client, spec):
        await put(client, [write("apt-1", "g1")])
        draining = asyncio.create_task(sender.drain(spec))
        await wait_until_async(lambda: client.exists(f"{ks().OUTBOX_BATCH}{TARGET}"))
        await client.set(f"{ks().SENDER}{TARGET}", "another-sender")  # it froze; another took over
        assert await draining == f"{TARGET}: lease lost"
        assert await accepted(client) == {}
        assert await Outbox(client).in_flight(TARGET) is not None  # the other resends it
        assert await client.get(f"{ks().SENDER}{TARGET}") == b"another-sender"


async def test_only_one_sender_drains_a_target_at_a_time(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client
) -> None:
    fault(sandbox, path="/listings/bulk", latency_ms=500, count=1)
    async with sender_for(redis_url, bridge_settings(redis_url, sandbox_url)) as (
            sender, client, spec):
        await put(client, [write("apt-1", "g1")])
        first = asyncio.create_task(sender.drain(spec))
        await wait_until_async(lambda: client.exists(f"{ks().OUTBOX_BATCH}{TARGET}"))
        assert await sender.drain(spec) == f"{TARGET}: another sender drains it"
        assert await first == f"{TARGET}: 1 operation(s) sent"
        assert len(bulks(sandbox)) == 1


# -- budgets -----------------------------------------------------------------------------------

async def test_a_window_the_portal_reported_spent_is_waited_out_not_tried(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client
) -> None:
    await asyncio.to_thread(sandbox.post, "/_sandbox/rate-limits",
                            json={"rentix_bulk_per_minute": 1})
    async with sender_for(redis_url, bridge_settings(redis_url, sandbox_url)) as (
            sender, client, spec):
        await put(client, [write(f"apt-{i:03}", f"g{i % 3}") for i in range(150)])
        await sender.drain(spec)
        seen = bulks(sandbox)
        assert [r["status"] for r in seen] == [200]  # the second would be refused: not sent
        state = await client.hgetall(f"{ks().TARGET}{TARGET}")  # type: ignore[misc]
        reported = orjson.loads(state[b"budget:bulk"])
        assert reported["limit"] == 1 and reported["remaining"] == 0
        due = await client.zscore(ks().SENDERS, TARGET)
        assert due == reported["reset"] > now_ms() + 30_000
        assert await Outbox(client).depth(TARGET) == 50


async def test_a_window_with_less_left_than_the_rate_needs_is_spread_until_it_resets(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client
) -> None:
    """Configured far above the portal's window (600 a minute against 4): the sender does not
    spend the window in a burst and then stop until it resets; it spreads what the window
    has left (3 after the first bulk) evenly until the reset (budget.paced_until)."""
    await asyncio.to_thread(sandbox.post, "/_sandbox/rate-limits",
                            json={"rentix_bulk_per_minute": 4})
    async with sender_for(redis_url, bridge_settings(redis_url, sandbox_url,
                                                     bulk_per_minute=600)) as (
            sender, client, spec):
        await put(client, [write(f"apt-{i:03}", f"g{i % 3}") for i in range(400)])
        await sender.drain(spec)
        assert [r["status"] for r in bulks(sandbox)] == [200]
        state = await client.hgetall(f"{ks().TARGET}{TARGET}")  # type: ignore[misc]
        reported = orjson.loads(state[b"budget:bulk"])
        assert reported["remaining"] == 3
        due = await client.zscore(ks().SENDERS, TARGET)
        share = (reported["reset"] - reported["at"]) / 3  # ~20 s
        assert due == pytest.approx(reported["at"] + share, abs=100)
        assert await Outbox(client).depth(TARGET) == 300


async def test_after_a_429_the_bulk_waits_for_the_window_and_keeps_its_key(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client
) -> None:
    await asyncio.to_thread(sandbox.post, "/_sandbox/rate-limits",
                            json={"rentix_bulk_per_minute": 1})
    # Another client of the same API key spends the bulk window first.
    used = await asyncio.to_thread(
        sandbox.post, "/rentix/api/v1/listings/bulk", headers={"Authorization": "ApiKey sandbox"},
        json={"operations": [{"op": "validate", "externalId": "x"}]})
    assert used.status_code in (200, 422)
    reset = int(used.headers["X-RateLimit-Reset"]) * 1000
    async with sender_for(redis_url, bridge_settings(redis_url, sandbox_url)) as (
            sender, client, spec):
        await put(client, [write("apt-1", "g1")])
        await sender.drain(spec)
        assert [r["status"] for r in bulks(sandbox)][-1:] == [429]
        state = await client.hgetall(f"{ks().TARGET}{TARGET}")  # type: ignore[misc]
        assert int(state[b"blocked_until"]) == reset
        assert await client.zscore(ks().SENDERS, TARGET) == reset
        kept = await Outbox(client).in_flight(TARGET)
        assert kept is not None and [op.ref for op in kept.ops] == ["apt-1"]
        # Asked again before the reset, it sends nothing.
        await sender.drain(spec)
        assert len(bulks(sandbox)) == 2


def test_a_429_waits_for_the_later_of_retry_after_and_the_window_reset() -> None:
    now = time.time()
    for reset, retry_after, expected in ((now + 30, "5", now + 30), (now + 5, "30", now + 30)):
        response = httpx.Response(429, json={"statusCode": 429, "message": "Too Many Requests"},
                                  headers={"X-RateLimit-Reset": str(int(reset)),
                                           "Retry-After": retry_after})
        retry_at = classify(response, 1.0).retry_at
        assert retry_at is not None and abs(retry_at - int(expected)) <= 1.5


# -- end to end: real worker processes ---------------------------------------------------------

def rentix_requests(stack: Stack) -> list[dict[str, Any]]:
    return [r for r in stack.journal("rentix") if r["method"] in ("PUT", "POST")]


@pytest.mark.processes
def test_a_burst_goes_by_bulk_across_groups_and_a_trickle_by_put(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path, workers=2) as stack:
        # The first bulk is slow: meanwhile the other groups' writes wait in the outbox.
        stack.sandbox.post("/_sandbox/faults", json={
            "portal": "rentix", "path": "/listings/bulk", "latency_ms": 1_000, "count": 1})
        group_of = {}
        for g in range(3):
            listings = [crm.listing(f"g{g}-apt-{i:02}") for i in range(30)]  # each over 23
            group_of.update({item["external_ref"]: f"g{g}" for item in listings})
            stack.post(crm.event("group.snapshot", f"g{g}", listings=listings))
        stack.wait(lambda: len(stack.rentix_listings()) == 90, timeout=30,
                   what="90 listings on Rentix")
        calls = rentix_requests(stack)
        by_bulk = [r for r in calls if r["path"].endswith("/bulk")]
        carried = [[op["externalId"] for op in r["body"]["operations"]] for r in by_bulk]
        # Every write went through the outbox once: by bulk, or by the sender's PUT lane
        # (single PUTs in the general budget the bulks leave free) while the first bulk was out.
        by_put = [r["body"]["externalId"] for r in calls if r["method"] == "PUT"]
        assert sorted([*by_put, *(ref for refs in carried for ref in refs)]) == sorted(group_of)
        assert len(by_put) < 30, "most went by bulk"
        assert any(len({group_of[ref] for ref in refs}) > 1 for refs in carried), carried
        before = len(calls)
        stack.post(crm.upsert("g1", "g1-apt-01", 2, price={"amount": 999, "currency": "EUR",
                                                              "period": "monthly"}))
        stack.wait(lambda: stack.rentix_listings()["g1-apt-01"]["formData"][
            "announcementValue"] == 999, what="the trickle delivered")
        later = rentix_requests(stack)[before:]
        assert [r["method"] for r in later] == ["PUT"]


@pytest.mark.processes
def test_a_worker_killed_during_a_bulk_is_replaced_and_every_bulk_is_applied_once(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path, workers=1,
                       delivery={"lease_ms": 2_000, "job_timeout_s": 10}) as stack:
        stack.sandbox.post("/_sandbox/faults", json={
            "portal": "rentix", "path": "/listings/bulk", "latency_ms": 2_000, "count": 1})
        victim = stack.workers[0]
        for g in range(2):  # 30 writes a group: over the threshold, they go by bulk
            stack.post(crm.event("group.snapshot", f"g{g}", listings=[
                crm.listing(f"g{g}-apt-{i:02}") for i in range(30)]))
        r = redis.Redis.from_url(redis_url)
        stack.wait(lambda: r.exists(f"{ks().OUTBOX_BATCH}rentix"), timeout=15,
                   what="a bulk in flight")
        stack.kill(victim)
        stack.start_worker()
        stack.wait(lambda: len(stack.rentix_listings()) == 60, timeout=40,
                   what="every listing on Rentix")
        bulk = [x for x in rentix_requests(stack) if x["path"].endswith("/bulk")]
        applied = [x["idempotency_key"] for x in bulk if x["status"] == 200 and not x["replayed"]]
        assert len(applied) == len(set(applied)), "a bulk was applied twice"
        r.close()


async def wait_until_async(probe: Any, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not await probe():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.processes
def test_adoption_holds_creates_that_would_go_by_bulk_and_the_linked_listing_goes(
    redis_url: str, tmp_path: Path, sandbox_url: str, sandbox: httpx.Client
) -> None:
    seeded = sandbox.post("/_sandbox/rentix/listings", json={"listings": [
        crm.hand_made("Chișinău, str. Ismail 10, ap. 3", externalId="apt-03"),
        crm.hand_made("Chișinău, str. Tighina 5, ap. 2")]})
    assert seeded.status_code == 200, seeded.text
    linked_id = seeded.json()["ids"][0]
    target = {"name": "rentix", "kind": "rentix", "base_url": f"{sandbox_url}/rentix/api/v1",
              "api_key": "sandbox", "adopt": True}
    with running_stack(redis_url, tmp_path, targets=[target]) as stack:
        price = {"amount": 640, "currency": "EUR", "period": "monthly"}
        stack.post(crm.event("group.snapshot", "office", listings=[
            crm.listing(f"apt-{i:02}", price=price) for i in range(30)]))  # over the threshold

        def held() -> int:
            return len(r.hgetall(f"{ks().ADOPT}rentix"))

        r = redis.Redis.from_url(redis_url)
        stack.wait(lambda: held() == 29, what="29 creates held for adoption")
        listings = {i["id"]: i for i in sandbox.get("/_sandbox/rentix/listings").json()["items"]}
        stack.wait(lambda: sandbox.get("/_sandbox/rentix/listings").json()["items"][0][
            "formData"]["announcementValue"] == 640, what="the linked listing updated")
        assert len(listings) == 2, "nothing was created beside the hand-made listings"
        # The portal shows the write a moment before the sender settles its answer.
        stack.wait(lambda: r.exists(f"{ks().OUTBOX}rentix") == 0, what="the outbox settled")
        writes = [x for x in sandbox.get("/_sandbox/journal", params={"portal": "rentix"}).json()[
            "requests"] if x["method"] in ("PUT", "POST")]
        sent = [op["externalId"] for x in writes if x["path"].endswith("/bulk")
                for op in x["body"]["operations"]]
        sent += [x["body"]["externalId"] for x in writes if x["method"] == "PUT"]
        assert sent == ["apt-03"]
        # It went through the outbox once: by bulk, or by the sender's PUT lane.
        assert len(writes) == 1
        assert listings[linked_id]["externalId"] == "apt-03"
        r.close()


async def test_newer_content_of_a_waiting_listing_keeps_its_place_in_the_queue(
    redis_url: str, sandbox_url: str, sandbox: httpx.Client
) -> None:
    async with sender_for(redis_url, bridge_settings(redis_url, sandbox_url)) as (_, client, _):
        await put(client, [write("old-1", "g1", 500)], at=now_ms() - 2_000)
        await put(client, [write(f"new-{i}", "g2") for i in range(3)], at=now_ms() - 1_000)
        await put(client, [write("old-1", "g1", 600)])  # changed again while waiting
        order = [e.ref for e in await Outbox(client).entries(TARGET)]
        assert order[0] == "old-1" and sorted(order[1:]) == ["new-0", "new-1", "new-2"]
        assert (await Outbox(client).entries(TARGET))[0].payload["announcementValue"] == 600


async def test_a_flush_puts_hundreds_of_writes_in_the_outbox_in_one_fenced_write(
    redis_url: str, settings: Settings
) -> None:
    from bridge.delivery.claims import Flushes

    async with Redis.from_url(redis_url) as client:
        flushes = Flushes(client, lease_ms=10_000, debounce=settings.debounce)
        entries = [write(f"apt-{i:04}", "g1") for i in range(600)]
        early = now_ms() - 5_000
        await put(client, [write("apt-0000", "g1")], at=early)  # waiting already
        claim = await flushes.claim("g1", now_ms())
        assert claim is not None
        # 1,200 ref/entry arguments: more than one command of the fenced script takes.
        assert await flushes.fenced(claim, outbox.put_writes(TARGET, entries, now_ms()))
        ready = await client.zrange(ks().OUTBOX_READY + TARGET, 0, -1, withscores=True)
        assert len(ready) == 600
        assert dict(ready)[b"apt-0000"] == early  # NX held in every part of the split
        assert await Outbox(client).depth(TARGET) == 600
