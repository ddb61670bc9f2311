"""A listing's story (``bridge trace``, ``GET /api/listings/{ref}/trace``, the dashboard's listing
page): every event received for it, every flush decision per target and every portal call,
newest first, kept for ``[trace] retention_days``, written by the webhook's one script call.

The stories are made by the whole bridge (``tests/support/stack.py``: the web process, real
worker processes and the sandbox portals over HTTP); the ingest script's entries and the reads
are also checked directly against the test Redis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import redis
from redis.asyncio import Redis

from bridge import constants as k
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.ingest.events import parse_event
from bridge.ingest.store import EventStore
from bridge.ops import NotFound, Operations
from bridge.ops.trace import CallEntry, DecisionEntry, EventEntry, ListingTrace
from bridge.settings import ConfigError, Settings, parse_settings
from tests.conftest import SECRET
from tests.support import crm
from tests.support.ingest import FoldingStore
from tests.support.stack import Stack, running_stack

WEEK_MS = 7 * 86_400_000


# -- helpers --

def story(stack: Stack, ref: str) -> dict[str, Any]:
    response = stack.bridge.get(f"/api/listings/{ref}/trace")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def entries(trace: dict[str, Any], kind: str, target: str | None = None,
            decision: str | None = None) -> list[dict[str, Any]]:
    return [e for e in trace["entries"] if e["kind"] == kind
            and (target is None or e.get("target") == target)
            and (decision is None or e.get("decision") == decision)]


def has(stack: Stack, ref: str, kind: str, target: str | None = None,
        decision: str | None = None) -> list[dict[str, Any]]:
    """The story's matching entries; none while no worker has folded the listing's first
    event (the listing is not known yet)."""
    if stack.bridge.get(f"/api/listings/{ref}/trace").status_code == 404:
        return []
    return entries(story(stack, ref), kind, target, decision)


def newest_first(trace: dict[str, Any]) -> bool:
    times = [e["at"] for e in trace["entries"]]
    return times == sorted(times, reverse=True)


def pttl(client: redis.Redis, ref: str) -> int:
    return cast(int, client.pttl(ks().TRACE + ref))


def fault(stack: Stack, **spec: Any) -> None:
    assert stack.sandbox.post("/_sandbox/faults", json=spec).status_code in (200, 201)


# -- the whole bridge tells each listing's story --

@pytest.mark.processes
def test_an_update_its_redelivery_a_stale_event_and_an_unchanged_one_are_told_with_each_send(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        first = crm.upsert("story", "apt-1", 2)
        assert stack.post(first, "wh-first").status_code == 202
        stack.wait(lambda: has(stack, "apt-1", "call", "rentix")
                   and has(stack, "apt-1", "call", "travtus"), what="both calls told")
        assert stack.post(first, "wh-first").json() == {"duplicate": True, "id": "wh-first"}
        assert stack.post(crm.upsert("story", "apt-1", 1), "wh-old").status_code == 202
        # A new version with the same content: applied, but nothing to send anywhere.
        assert stack.post(crm.upsert("story", "apt-1", 3), "wh-same").status_code == 202
        stack.wait(lambda: has(stack, "apt-1", "decision", "rentix", "unchanged")
                   and has(stack, "apt-1", "decision", "travtus", "unchanged"),
                   what="the unchanged decisions")
        trace = story(stack, "apt-1")

    assert newest_first(trace)
    assert [(e["webhook_id"], e["type"], e["version"], e["result"], e["group"])
            for e in entries(trace, "event")] == [
        ("wh-same", "listing.updated", 3, "applied", "story"),
        ("wh-old", "listing.updated", 1, "stale", "story"),
        ("wh-first", "listing.updated", 2, "duplicate", "story"),
        ("wh-first", "listing.updated", 2, "applied", "story")]
    assert entries(trace, "event")[0]["occurred_at"] == int(crm.BASE.timestamp() * 1000)
    assert trace["group"] == "story" and trace["version"] == 3 and not trace["deleted"]
    for target, operation in (("rentix", "upsert"), ("travtus", "sync")):
        step = trace["targets"][target]
        assert step["status"] == "in step" and step["in_step"]
        assert step["accepted_digest"] == step["desired_digest"]
        told = [e for e in trace["entries"] if e.get("target") == target]
        assert [(e["kind"], e.get("decision")) for e in told] == [
            ("decision", "unchanged"), ("call", None), ("decision", "sent")]
        unchanged, call, sent = told
        assert unchanged["detail"] == "the target holds this content already"
        assert unchanged["digest"] == step["accepted_digest"]
        assert sent["operation"] == operation and sent["digest"] == step["accepted_digest"]
        assert sent["key"] == call["idempotency_key"] and call["idempotency_key"].startswith("lb-")
        assert (call["operation"], call["status"], call["outcome"], call["error"],
                call["attempt"]) == (operation, 200, "ok", "", 1)
        assert call["latency_ms"] >= 0 and call["group"] == "story"


@pytest.mark.processes
def test_the_story_is_kept_for_the_retention_by_every_writer(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        stack.post(crm.upsert("kept", "apt-1", 1))
        client = redis.Redis.from_url(redis_url)
        # The event's TTL is set by the fold that tells it, before any flush.
        stack.wait(lambda: client.exists(ks().TRACE + "apt-1"), what="the event folded")
        assert WEEK_MS - 60_000 < pttl(client, "apt-1") <= WEEK_MS
        stack.wait(lambda: has(stack, "apt-1", "call", "travtus"), what="the sync told")
        client.persist(ks().TRACE + "apt-1")
        stack.post(crm.upsert("kept", "apt-1", 2, bedrooms=4))
        stack.wait(lambda: len(has(stack, "apt-1", "call", "travtus")) == 2,
                   what="the second sync told")
        # The flush's writes (decisions, calls) set it too.
        client.persist(ks().TRACE + "apt-1")
        stack.post(crm.upsert("kept", "apt-1", 3, bedrooms=5), "wh-3")
        client.persist(ks().TRACE + "apt-1")
        stack.wait(lambda: len(has(stack, "apt-1", "call", "travtus")) == 3,
                   what="the third sync told")
        assert WEEK_MS - 60_000 < pttl(client, "apt-1") <= WEEK_MS


@pytest.mark.processes
def test_a_rentix_write_refused_with_400_is_quarantined_in_the_story(
    redis_url: str, tmp_path: Path
) -> None:
    refusal = {"statusCode": 400, "message": ["propertyArea must be a number"],
               "error": "Bad Request"}
    with running_stack(redis_url, tmp_path) as stack:
        fault(stack, portal="rentix", method="PUT", path="/listings", status=400, body=refusal,
              count=1)
        stack.post(crm.upsert("refused", "apt-q", 1), "wh-q")
        stack.wait(lambda: has(stack, "apt-q", "decision", "rentix", "quarantined"),
                   what="the quarantine told")
        # The targets run side by side: the other portal's sync may land a moment later.
        stack.wait(lambda: story(stack, "apt-q")["targets"]["travtus"]["in_step"],
                   what="travtus in step")
        trace = story(stack, "apt-q")
        # The same content again: still quarantined, not sent again.
        stack.post(crm.upsert("refused", "apt-q", 2), "wh-q2")
        stack.wait(lambda: len(has(stack, "apt-q", "decision", "rentix", "quarantined")) == 2,
                   what="the second quarantine decision")
        again = story(stack, "apt-q")

    rentix = [e for e in trace["entries"] if e.get("target") == "rentix"]
    assert [(e["kind"], e.get("decision")) for e in rentix] == [
        ("decision", "quarantined"), ("call", None), ("decision", "sent")]
    quarantined, call, sent = rentix
    assert (call["status"], call["outcome"], call["operation"]) == (400, "data_invalid", "upsert")
    assert "propertyArea" in call["error"] and call["idempotency_key"] == sent["key"]
    assert quarantined["digest"] == sent["digest"]
    assert "(propertyArea)" in quarantined["detail"]
    assert trace["targets"]["rentix"]["status"] == "quarantined"
    assert not trace["targets"]["rentix"]["in_step"]
    assert trace["targets"]["rentix"]["accepted_digest"] is None
    assert trace["targets"]["travtus"]["in_step"]  # the other portal took it
    latest = entries(again, "decision", "rentix")[0]
    assert latest["decision"] == "quarantined"
    assert latest["detail"].startswith("refused before with this content")
    assert len(entries(again, "call", "rentix")) == 1


@pytest.mark.processes
def test_a_held_and_a_rate_limited_travtus_sync_are_in_the_story(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        stack.post(crm.upsert("empty", "apt-0", 1))
        stack.wait(lambda: stack.travtus_listings("empty"), what="the first sync")
        stack.post(crm.upsert("empty", "apt-0", 2, status="hidden"), "wh-hide")
        stack.wait(lambda: has(stack, "apt-0", "decision", "travtus", "held"),
                   what="the held sync told")
        held_trace = story(stack, "apt-0")
        held = stack.bridge.get("/api/problems").json()["held"][0]

        # The portal answers 429 with Retry-After: the target waits, and the story says so.
        fault(stack, portal="travtus", path="/listing/sync", status=429, count=1,
              headers={"Retry-After": "30"})
        asked = now_ms()
        stack.post(crm.upsert("slow", "apt-r", 1), "wh-r")
        stack.wait(lambda: has(stack, "apt-r", "decision", "travtus", "rate-limited"),
                   what="the rate limit told")
        limited = story(stack, "apt-r")

    decision = entries(held_trace, "decision", "travtus")[0]
    assert decision["decision"] == "held" and decision["digest"] == held["digest"]
    assert "empty" in decision["detail"] and decision["group"] == "empty"
    assert entries(held_trace, "event")[0]["webhook_id"] == "wh-hide"
    assert held_trace["targets"]["travtus"]["status"] == "pending removal"

    travtus = [e for e in limited["entries"] if e.get("target") == "travtus"]
    assert [(e["kind"], e.get("decision")) for e in travtus] == [
        ("decision", "rate-limited"), ("call", None), ("decision", "sent")]
    rate_limited, call, sent = travtus
    assert (call["status"], call["outcome"], call["operation"]) == (429, "rate_limited", "sync")
    assert call["idempotency_key"] == sent["key"]
    assert asked + 25_000 < rate_limited["until"] <= now_ms() + 31_000
    assert not limited["targets"]["travtus"]["in_step"]
    assert limited["targets"]["rentix"]["in_step"]


@pytest.mark.processes
def test_entries_expire_after_a_tiny_retention(redis_url: str, tmp_path: Path) -> None:
    retention_days = 0.00005  # 4.32 s
    retention_ms = round(retention_days * 86_400_000)
    with running_stack(redis_url, tmp_path, trace={"retention_days": retention_days}) as stack:
        stack.post(crm.upsert("brief", "apt-1", 1))
        client = redis.Redis.from_url(redis_url)
        stack.wait(lambda: client.exists(ks().TRACE + "apt-1"), what="the event folded")
        assert 0 < pttl(client, "apt-1") <= retention_ms
        stack.wait(lambda: has(stack, "apt-1", "call", "travtus"), what="the sync told")
        stack.wait(lambda: not client.exists(ks().TRACE + "apt-1"), timeout=retention_ms / 1000 + 5,
                   what="the story to expire")
        trace = story(stack, "apt-1")  # the listing is still known: its story is empty
        assert trace["entries"] == [] and trace["retention_days"] == retention_days
        assert stack.bridge.get("/api/listings/never-seen/trace").status_code == 404


def test_one_webhook_is_still_one_call_to_redis(redis_url: str, tmp_path: Path) -> None:
    """The story's entry is the fold's: the webhook's one round trip stores the event only."""
    with running_stack(redis_url, tmp_path, workers=0) as stack:
        stack.post(crm.upsert("bench", "apt-0", 1))  # connections made, script loaded
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        before = cast(dict[str, Any], client.info("commandstats"))
        seen = monitor(redis_url, lambda: stack.post(crm.upsert("bench", "apt-1", 1), "wh-one"))
        after = cast(dict[str, Any], client.info("commandstats"))

    calls = {name: after[name]["calls"] - before.get(name, {"calls": 0})["calls"]
             for name in after}
    assert calls["cmdstat_evalsha"] == 1
    from_clients = [command for source, command in seen if source != "lua"]
    assert from_clients == ["EVALSHA"]
    # The tenant's turn (ZADD lb:wake), the inbox's ceiling (LLEN), the dedupe marker, the
    # inbox: nothing of the fold.
    assert [command for source, command in seen if source == "lua"] == [
        "ZADD", "LLEN", "SET", "RPUSH"]


def monitor(redis_url: str, action: Callable[[], object]) -> list[tuple[str, str]]:
    """(source, command) of every command Redis runs while ``action`` runs: "lua" for those a
    script calls."""
    marker = f"end-of-test-{time.monotonic_ns()}"
    client = redis.Redis.from_url(redis_url)
    seen: list[tuple[str, str]] = []
    ready = threading.Event()

    def watch() -> None:
        with client.monitor() as m:  # type: ignore[no-untyped-call]
            ready.set()
            for command in m.listen():
                text = str(command["command"])
                if marker in text:
                    return
                seen.append(("lua" if command.get("client_type") == "lua" else "client",
                             text.split(" ", 1)[0].upper()))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert ready.wait(5)  # MONITOR is in place: entering the block read its OK
    action()
    with redis.Redis.from_url(redis_url) as other:
        other.echo(marker)
    watcher.join(timeout=10)
    client.close()
    assert not watcher.is_alive()
    return seen


@pytest.mark.processes
def test_the_dashboard_shows_a_listing_story_linked_from_its_group(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        stack.post(crm.upsert("pages", "apt/1 ?x", 1), "wh-page")
        stack.wait(lambda: has(stack, "apt/1%20%3Fx", "call", "travtus"), what="delivered")
        group = stack.bridge.get("/dashboard/groups/pages")
        page = stack.bridge.get("/dashboard/listings/apt/1%20%3Fx")
        missing = stack.bridge.get("/dashboard/listings/nope")

    assert 'href="/dashboard/listings/apt/1%20%3Fx"' in group.text
    assert page.status_code == 200
    assert "Listing apt/1 ?x" in page.text and "wh-page" in page.text
    assert page.text.index("call") < page.text.index("event <strong>applied")
    assert missing.status_code == 404 and "no listing" in missing.text


# -- the ingest script's entries and the reads, directly --

@pytest.fixture
async def store(redis: Redis, ops_settings: Settings) -> AsyncIterator[EventStore]:
    assert ops_settings.redis_url
    events = FoldingStore(redis, ops_settings)
    yield events
    await events.aclose()


async def put(store: EventStore, webhook_id: str, event: dict[str, Any]) -> None:
    await store.put(webhook_id, parse_event(orjson.dumps(event)), now_ms())


async def test_a_snapshot_tells_each_listing_it_names_or_deletes_and_its_redelivery_too(
    store: EventStore, ops: Operations
) -> None:
    for ref in ("a", "b", "c"):
        await put(store, f"wh-{ref}", crm.upsert("snap", ref, 5))
    snapshot = crm.event("group.snapshot", "snap", occurred_at=crm.at(49_500),
                         listings=[crm.listing("a", 6), crm.listing("b", 4)])
    await put(store, "wh-snap", snapshot)
    await put(store, "wh-snap", snapshot)

    def told(trace: ListingTrace) -> list[tuple[str, str, int | None, str, bool]]:
        return [(e.webhook_id, e.type, e.version, e.result, e.absent)
                for e in trace.entries if isinstance(e, EventEntry)]

    assert told(await ops.trace("a")) == [
        ("wh-snap", "group.snapshot", 6, "duplicate", False),
        ("wh-snap", "group.snapshot", 6, "applied", False),
        ("wh-a", "listing.updated", 5, "applied", False)]
    assert told(await ops.trace("b"))[1] == ("wh-snap", "group.snapshot", 4, "stale", False)
    # Left out of the snapshot: deleted by it; its redelivery names only the listings it holds.
    assert told(await ops.trace("c")) == [
        ("wh-snap", "group.snapshot", None, "applied", True),
        ("wh-c", "listing.updated", 5, "applied", False)]
    assert (await ops.trace("c")).deleted


async def test_created_and_deleted_events_are_told_by_their_type(
    store: EventStore, ops: Operations
) -> None:
    await put(store, "wh-1", crm.event("listing.created", "types", listing=crm.listing("x")))
    await put(store, "wh-2", crm.event("listing.deleted", "types",
                                       occurred_at=crm.at(49_500),
                                       listing={"external_ref": "x"}))
    trace = await ops.trace("x")
    assert [(e.type, e.version, e.result) for e in trace.entries
            if isinstance(e, EventEntry)] == [("listing.deleted", None, "applied"),
                                              ("listing.created", None, "applied")]


async def test_a_story_keeps_its_newest_entries_only(
    store: EventStore, ops: Operations, redis: Redis
) -> None:
    for n in range(k.TRACE_MAXLEN + 5):
        await put(store, f"wh-{n}", crm.upsert("busy", "apt-1", n))
    assert await redis.llen(ks().TRACE + "apt-1") == k.TRACE_MAXLEN  # type: ignore[misc]
    trace = await ops.trace("apt-1")
    assert len(trace.entries) == k.TRACE_MAXLEN
    first = trace.entries[0]
    assert isinstance(first, EventEntry) and first.webhook_id == f"wh-{k.TRACE_MAXLEN + 4}"


async def test_entries_older_than_the_retention_are_left_out_and_unreadable_ones_skipped(
    store: EventStore, ops: Operations, redis: Redis, ops_settings: Settings
) -> None:
    await put(store, "wh-now", crm.upsert("old", "apt-1", 1))
    stale = {"kind": "call", "at": now_ms() - ops_settings.trace.retention_ms - 1_000,
             "target": "rentix", "group": "old", "operation": "upsert",
             "idempotency_key": "lb-old", "status": 200, "outcome": "ok", "error": "",
             "latency_ms": 1.0, "attempt": 1}
    await redis.rpush(ks().TRACE + "apt-1", orjson.dumps(stale), b"not json",  # type: ignore[misc]
                      orjson.dumps({"kind": "mystery", "at": now_ms()}))
    trace = await ops.trace("apt-1")
    assert [type(e) for e in trace.entries] == [EventEntry]


async def test_decisions_and_calls_read_back_as_their_models(
    ops: Operations, redis: Redis, store: EventStore
) -> None:
    await put(store, "wh-1", crm.upsert("models", "apt-1", 1))
    from bridge.delivery.ledger import Attempt
    from bridge.delivery.trace import decision_entry

    at = now_ms()
    await ops.ledger.trace([("apt-1", decision_entry(at, "rentix", "models", "rate-limited",
                                                     until=at + 5_000, detail="spent"))])
    await ops.ledger.record_attempt(Attempt(at + 1, "travtus", "models", "sync", ["apt-1"],
                                            "lb-k", "transient", 503, 12.5, 2, "http_503 down"),
                                    [])
    trace = await ops.trace("apt-1")
    call, decision, event = trace.entries
    assert call == CallEntry("call", at + 1, "travtus", "models", "sync", "lb-k", 503,
                             "transient", "http_503 down", 12.5, 2)
    assert decision == DecisionEntry("decision", at, "rentix", "models", "rate-limited", None,
                                     None, None, at + 5_000, "spent")
    assert isinstance(event, EventEntry)
    assert 0 < await redis.pttl(ks().TRACE + "apt-1") <= ops.settings.trace.retention_ms
    assert list(orjson.loads(orjson.dumps(trace))) == [
        "ref", "now", "retention_days", "group", "version", "deleted", "occurred_at",
        "received_at", "targets", "entries"]


async def test_an_unknown_listing_without_a_story_is_not_found(ops: Operations) -> None:
    with pytest.raises(NotFound, match="no listing 'nope' is known"):
        await ops.trace("nope")


# -- [trace] retention_days --

def settings_with(trace: dict[str, Any]) -> Settings:
    return parse_settings({"webhook": {"secrets": [SECRET]}, "trace": trace})


def test_retention_defaults_to_seven_days_and_takes_fractions() -> None:
    assert settings_with({}).trace.retention_days == 7
    assert settings_with({}).trace.retention_ms == WEEK_MS
    assert settings_with({"retention_days": 0.5}).trace.retention_ms == 43_200_000
    assert settings_with({"retention_days": "2"}).trace.retention_days == 2


@pytest.mark.parametrize("value", [0, -1, 366, "soon", True, float("inf")])
def test_a_retention_that_is_not_a_positive_number_of_days_is_refused_plainly(
    value: Any
) -> None:
    with pytest.raises(ConfigError, match=r"trace\.retention_days: found .*; expected a number "
                                          r"of days greater than 0 and at most 365"):
        settings_with({"retention_days": value})


def test_an_unknown_trace_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"trace\.keep: unknown setting"):
        settings_with({"keep": 3})
