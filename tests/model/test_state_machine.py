"""The real bridge against the reference model (tests/model/reference.py), driven by Hypothesis.

Every step drives real parts: events go through the webhook's validation (``parse_event``) and
its accept script into the session's Redis; the workers' fold script folds the inbox; two
in-process workers (``Delivery``) flush groups to the sandbox portals over loopback HTTP, and
the outbox's sender drains Rentix bulks (also ahead of a group's flush, with what was folded
since). Rules create, update, delete, hide and move listings, send full, partial and empty
snapshots, redeliver webhooks, send late and out-of-order events
and versions at the edges of their range, leave events waiting in the inbox, slow down and fail
portal calls (latency, 5xx, 429), race a move against a slow write, interleave flushes of two
groups, take a flush's lease away mid-way, and let time pass (so tombstones, per-group markers
and dedupe markers expire as Redis would expire them).

At each quiescent point (``settle``: fold, release held syncs as an operator would, flush every
due group and drain the outbox until nothing is due) the portals must hold exactly the model's
state, the ledger must agree with them, no idempotency key may have carried two bodies, and every
acknowledged event must be in its listings' stories.

Time. Receipt times are the real clock plus ``offset``: a rule that lets time pass adds to the
offset and shortens every Redis expiry by as much (what has run out is deleted), and a compacted
tombstone's expiry, which the flush computes from the real clock, is set to what it would be at
the offset (``_fix_tombstones``). Occurred times are the example's start plus the offset plus a
logical clock (10 ms per event), so their order never depends on how fast a step ran.

CI runs the short profile (``ci``: 30 derandomized examples of 20 steps); the long one is

    .venv/bin/python -m pytest tests/model/test_state_machine.py -p no:logging --timeout 900 \\
        --hypothesis-profile=long --hypothesis-show-statistics

``BRIDGE_MODEL_OFF`` (comma-separated: big_versions, advance, idle, race, lease, faults,
backlog, bulk) switches rule families off, to look for one bug at a time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import orjson
import pytest
import redis
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis as AsyncRedis

from bridge import constants as k
from bridge import stories
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.desired import DesiredListing
from bridge.delivery.flush import Delivery
from bridge.delivery.ledger import Ledger
from bridge.delivery.planning import desired_digest
from bridge.ingest import store
from bridge.ingest.events import InvalidEvent, parse_event
from bridge.ingest.inbox import FoldSettings, fold_now
from bridge.ops.actions import Actions
from bridge.portals import RentixAdapter, adapters_for
from bridge.sandbox.app import SandboxSettings
from bridge.sandbox.app import create_app as create_sandbox
from bridge.settings import RentixTarget, Settings
from tests.conftest import make_settings
from tests.model.reference import Item, Kind, Received, Reference
from tests.support import crm
from tests.support.sandbox import Sandbox
from tests.support.servers import serve_app

# About a minute on two cores (more on a loaded one, hence its own timeout): a tier of its
# own, left out of `./scripts/test --fast`.
pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

OFF = frozenset(filter(None, os.environ.get("BRIDGE_MODEL_OFF", "").split(",")))

REFS = ("r0", "r1", "r2", "r3", "r4")
GROUPS = ("ga", "gb", "gc")
HORIZON_MS = 30_000  # [retention] horizon_days, shrunk: time can pass beyond it in a step
TICK_MS = 10  # the logical clock's step between events
SETTLE_S = 25.0  # the longest a quiescent point may take to reach
MAX_VERSION = 2**53 - 1
EDGE_VERSIONS = [0, MAX_VERSION - 1, MAX_VERSION]
# Versions the contract refuses (a 400); what the bridge acknowledges of them is reported.
BEYOND_VERSIONS = [] if "big_versions" in OFF else [2**53, 2**63]

versions = st.one_of(
    st.none(), st.integers(0, 4), st.sampled_from(EDGE_VERSIONS),
    *([st.sampled_from(BEYOND_VERSIONS)] if BEYOND_VERSIONS else []))
# Most events are the newest; some are older than what came before, a few tie.
jitters = st.sampled_from([0, 0, 0, 0, -1, -3, -8, -20])
T = TypeVar("T")


def on(family: str) -> Callable[[Any], bool]:
    return lambda self: family not in OFF


def iso(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(frozen=True)
class Delivered:
    """A webhook as the CRM sent it: its id and JSON payload (kept for redeliveries)."""

    webhook_id: str
    payload: dict[str, Any]


class BridgeMachine(RuleBasedStateMachine):
    redis_url: ClassVar[str]
    sandbox_url: ClassVar[str]
    examples: ClassVar[int] = 0  # examples run so far (BRIDGE_MODEL_LOG names a file for them)

    def __init__(self) -> None:
        super().__init__()
        BridgeMachine.examples += 1
        self.number = BridgeMachine.examples
        self.loop = asyncio.new_event_loop()
        self.r = redis.Redis.from_url(self.redis_url, decode_responses=True)
        self.r.flushdb()
        self.sandbox = Sandbox(self.sandbox_url)
        self.run(self.sandbox.reset())
        self.run(self.sandbox.rate_limits(rentix_per_minute=100_000,
                                          rentix_bulk_per_minute=100_000))
        self.offset = 0
        self.start = now_ms()
        self.events = 0
        self.sent: list[Delivered] = []
        self.acknowledged: list[Received] = []
        self.unfolded: list[Received] = []  # accepted, in the inbox: the model folds them too
        self.beyond: list[str] = []  # webhook ids acknowledged with a version past 2**53 - 1
        self.workers: list[Delivery] = []
        self.clients: list[AsyncRedis] = []
        self.steps_unchecked = 0
        self.broken = False
        self.model = Reference(HORIZON_MS, 0)

    # -- plumbing --

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)  # type: ignore[arg-type]

    def vnow(self) -> int:
        return now_ms() + self.offset

    @initialize(bulk=st.booleans())
    def configure(self, bulk: bool) -> None:
        bulk = bulk and "bulk" not in OFF
        sandbox = self.sandbox_url
        self.settings: Settings = make_settings(
            self.redis_url,
            targets=[
                {"name": "rentix", "kind": "rentix", "base_url": f"{sandbox}/rentix/api/v1",
                 # The PUT lane gets the general budget the bulks leave: half of it here.
                 "api_key": "sandbox", "requests_per_minute": 12_000,
                 "bulk_per_minute": 6_000 if bulk else 0, "bulk_after_s": 0.02},
                {"name": "travtus", "kind": "travtus", "base_url": f"{sandbox}/travtus",
                 "token_url": f"{sandbox}/travtus/oauth2/token", "client_id": "sandbox",
                 "client_secret": "sandbox"},
            ],
            guard={"max_delete_count": 1_000, "max_delete_fraction": 1.0},
            retention={"horizon_days": HORIZON_MS / 86_400_000},
            delivery={"job_timeout_s": 5, "retry_base_s": 0.05, "retry_max_s": 0.4,
                      "lease_ms": 2_000})
        self.bulk = bulk
        self.model = Reference(HORIZON_MS, self.settings.webhook.dedupe_ttl_seconds * 1000)
        self.fold_settings = FoldSettings.of(self.settings)
        for _ in range(2):  # two workers, as two processes would be
            client = AsyncRedis.from_url(self.redis_url)
            self.clients.append(client)
            self.workers.append(Delivery(client, self.settings, adapters_for(self.settings)))
        # The second worker's sender (drain_ahead) counts every group with changes waiting
        # as busy, so the model checks writes taken ahead of their flush (ahead.py) whenever
        # there are any; the first keeps the debounce window's rule.
        self.workers[1].sender.ahead.window_ms = 0
        self.rentix = self.settings.targets[0]
        assert isinstance(self.rentix, RentixTarget)

    def teardown(self) -> None:
        try:
            if self.workers and self.steps_unchecked and not self.broken:
                self.settle()
        finally:
            if log := os.environ.get("BRIDGE_MODEL_LOG"):
                with open(log, "a") as out:
                    out.write(f"example {self.number}: {'failed' if self.broken else 'ok'}\n")
            for worker in self.workers:
                for adapter in worker.adapters.values():
                    self.run(adapter.aclose())
            for client in self.clients:
                self.run(client.aclose())
            self.run(self.sandbox.aclose())
            self.r.close()
            self.loop.close()

    # -- the CRM's side --

    def occurred(self, jitter: int) -> int:
        self.events += 1
        return self.start + self.offset + (self.events + jitter) * TICK_MS

    def body(self, ref: str, version: int | None, hidden: bool = False) -> dict[str, Any]:
        price = {"amount": 1_000 + self.events, "currency": "EUR", "period": "monthly"}
        return crm.listing(ref, version, price=price, status="hidden" if hidden else "active")

    def deliver(self, payload: dict[str, Any], fold: bool, webhook_id: str | None = None
                ) -> None:
        webhook_id = webhook_id or f"wh-{len(self.sent)}-{self.events}"
        self.sent.append(Delivered(webhook_id, payload))
        self._receive(Delivered(webhook_id, payload))
        if fold:
            self.fold()

    def _receive(self, delivered: Delivered) -> None:
        """What the webhook does with a verified request: validate, accept (dedupe, inbox)."""
        try:
            event = parse_event(orjson.dumps(delivered.payload))
        except InvalidEvent:
            return  # a 400: nothing acknowledged
        received = self.vnow()
        status = store.accept_now(self.r, delivered.webhook_id, received,
                                  store.entry(delivered.webhook_id, received, event),
                                  self.settings.webhook.dedupe_ttl_seconds)
        kind: Kind = {"group.snapshot": "snapshot", "listing.deleted": "delete"}.get(
            event.type, "upsert")  # type: ignore[assignment]
        # The content as the webhook keeps it (validated and written back): the CRM's.
        items = tuple(Item(ref, None if version < 0 else version,
                           None if kind == "delete" else orjson.loads(bytes(stored)))
                      for ref, version, stored in event.listings)
        seen = Received(delivered.webhook_id, received, kind, event.group, event.occurred_ms,
                        items)
        accepted = self.model.accept(seen)
        if accepted:
            self.unfolded.append(seen)
        if items:
            assert (int(status) == 0) == (not accepted), (
                f"the bridge answered {'duplicate' if int(status) == 0 else 'accepted'} to "
                f"{delivered.webhook_id}; the model says {'new' if accepted else 'duplicate'}")
        self.acknowledged.append(seen)
        if any(item.version is not None and item.version > MAX_VERSION for item in items):
            self.beyond.append(delivered.webhook_id)

    def fold(self) -> None:
        """The workers' fold; the model folds the same events first, told which listings the
        bridge keeps only as a compacted tombstone (no event folded before them in this call
        applied to them: that brings a listing back)."""
        touched: set[str] = set()

        def compacted(ref: str) -> bool:
            return ref not in touched and "at" not in self.r.hgetall(f"{ks().LISTING}{ref}")

        for event in self.unfolded:
            outcomes = self.model.fold(event, compacted)
            touched.update(ref for ref, outcome in outcomes.items() if outcome == "applied")
        self.unfolded.clear()
        while True:
            if not fold_now(self.r, self.fold_settings).left:
                return

    def _begin(self) -> None:
        self.broken = True  # until the rule ends without raising
        self.steps_unchecked += 1

    def _end(self) -> None:
        self.broken = False

    # -- rules: events --

    @rule(ref=st.sampled_from(REFS), group=st.sampled_from(GROUPS), version=versions,
          jitter=jitters, hidden=st.sampled_from([False, False, False, True]),
          fold=st.booleans())
    def upsert(self, ref: str, group: str, version: int | None, jitter: int, hidden: bool,
               fold: bool) -> None:
        self._begin()
        occurred = self.occurred(jitter)
        self.deliver(crm.event("listing.updated", group, iso(occurred),
                               listing=self.body(ref, version, hidden)), fold or "backlog" in OFF)
        self._end()

    @rule(ref=st.sampled_from(REFS), group=st.sampled_from(GROUPS), version=versions,
          jitter=jitters, fold=st.booleans())
    def delete(self, ref: str, group: str, version: int | None, jitter: int,
               fold: bool) -> None:
        self._begin()
        listing: dict[str, Any] = {"external_ref": ref}
        if version is not None:
            listing["version"] = version
        occurred = self.occurred(jitter)
        self.deliver(crm.event("listing.deleted", group, iso(occurred), listing=listing),
                     fold or "backlog" in OFF)
        self._end()

    @rule(group=st.sampled_from(GROUPS),
          refs=st.lists(st.sampled_from(REFS), unique=True, max_size=len(REFS)),
          chosen=st.lists(versions, min_size=len(REFS), max_size=len(REFS)),
          jitter=jitters, fold=st.booleans())
    def snapshot(self, group: str, refs: list[str], chosen: list[int | None], jitter: int,
                 fold: bool) -> None:
        """Full (every ref), partial or empty."""
        self._begin()
        occurred = self.occurred(jitter)
        listings = [self.body(ref, version) for ref, version in zip(refs, chosen, strict=False)]
        self.deliver(crm.event("group.snapshot", group, iso(occurred), listings=listings),
                     fold or "backlog" in OFF)
        self._end()

    @rule(ref=st.sampled_from(REFS), group=st.sampled_from(GROUPS), version=versions,
          behind=st.sampled_from([1_000, 20_000]))
    def late(self, ref: str, group: str, version: int | None, behind: int) -> None:
        """An event from beyond the horizon (stale at receipt), or well behind the present."""
        self._begin()
        self.events += 1
        extra = HORIZON_MS if behind > HORIZON_MS // 2 else 0
        occurred = self.start + self.offset + self.events * TICK_MS - behind - extra
        self.deliver(crm.event("listing.updated", group, iso(occurred),
                               listing=self.body(ref, version)), True)
        self._end()

    @precondition(lambda self: bool(self.sent))
    @rule(pick=st.integers(0, 10**6), fold=st.booleans())
    def redeliver(self, pick: int, fold: bool) -> None:
        self._begin()
        again = self.sent[pick % len(self.sent)]
        self.deliver(again.payload, fold or "backlog" in OFF, webhook_id=again.webhook_id)
        self._end()

    @rule()
    def fold_inbox(self) -> None:
        self._begin()
        self.fold()
        self._end()

    # -- rules: portals and flushes --

    @precondition(on("faults"))
    @rule(where=st.sampled_from(["rentix-put", "rentix-bulk", "travtus-sync"]),
          what=st.sampled_from(["latency", "500", "503", "429"]),
          count=st.integers(1, 3))
    def portal_fault(self, where: str, what: str, count: int) -> None:
        self._begin()
        spec: dict[str, Any] = {
            "rentix-put": {"portal": "rentix", "method": "PUT", "path": "/listings"},
            "rentix-bulk": {"portal": "rentix", "method": "POST", "path": "/listings/bulk"},
            "travtus-sync": {"portal": "travtus", "method": "POST", "path": "/listing/sync"},
        }[where]
        if what == "latency":
            spec["latency_ms"] = 300
        else:
            spec["status"] = int(what)
        if what == "429":
            spec["headers"] = {"X-RateLimit-Remaining": "0", "Retry-After": "1",
                               "X-RateLimit-Reset": str(int(time.time()) + 1)}
        self.run(self.sandbox.fault(count=count, **spec))
        self._end()

    @precondition(lambda self: self.bulk)
    @rule()
    def drain_ahead(self) -> None:
        """The sender drains the outbox after newer events were folded and before their
        group's flush: it takes the writes with the newer content where no guard judges it
        (bridge/delivery/fresh.py), and a busy group's creates and updates ahead of its flush
        (bridge/delivery/ahead.py)."""
        self._begin()
        self.fold()
        self.run(self.workers[1].sender.drain(self.rentix))  # type: ignore[arg-type]
        self._end()

    @rule()
    def settle(self) -> None:
        """A quiescent point: everything folded and delivered; then the invariants."""
        self._begin()
        self.run(self._settle())
        self.run(self._check())
        self.steps_unchecked = 0
        self._end()

    @precondition(on("race"))
    @rule(ref=st.sampled_from(REFS), to=st.sampled_from(GROUPS),
          portal=st.sampled_from(["rentix", "travtus"]))
    def move_during_slow_write(self, ref: str, to: str, portal: str) -> None:
        """The listing changes in its group, whose flush sends it slowly; meanwhile it moves
        to another group with newer content, and that group is flushed by another worker."""
        self._begin()
        held = self.model.listings.get(ref)
        source = held.group if held is not None else next(g for g in GROUPS if g != to)
        if source == to:
            self._end()
            return
        self.deliver(crm.event("listing.updated", source, iso(self.occurred(0)),
                               listing=self.body(ref, None)), True)

        async def during() -> None:
            self.deliver(crm.event("listing.updated", to, iso(self.occurred(0)),
                                   listing=self.body(ref, None)), True)

        self.run(self._slow_flush(portal, source, during, second=to))
        self._end()

    @precondition(on("race"))
    @rule(first=st.sampled_from(GROUPS), second=st.sampled_from(GROUPS),
          ref=st.sampled_from(REFS), portal=st.sampled_from(["rentix", "travtus"]))
    def interleaved_flushes(self, first: str, second: str, ref: str, portal: str) -> None:
        """Two groups flushed at once by two workers, the first one slowly."""
        self._begin()
        if first != second:
            self.run(self._slow_flush(portal, first, None, second=second))
        self._end()

    @precondition(on("lease"))
    @rule(group=st.sampled_from(GROUPS), ref=st.sampled_from(REFS),
          portal=st.sampled_from(["rentix", "travtus"]), again=st.booleans())
    def lease_lost_midway(self, group: str, ref: str, portal: str, again: bool) -> None:
        """A flush whose lease is deleted while its portal call is under way (as if it had
        lapsed); another worker may take the group at once."""
        self._begin()
        self.deliver(crm.event("listing.updated", group, iso(self.occurred(0)),
                               listing=self.body(ref, None)), True)

        async def during() -> None:
            await self.clients[0].delete(f"{ks().LEASE}{group}")

        self.run(self._slow_flush(portal, group, during, second=group if again else None))
        self._end()

    async def _slow_flush(self, portal: str, group: str,
                          during: Callable[[], Awaitable[None]] | None,
                          second: str | None) -> None:
        """Flush ``group`` (worker 0) with its first write to ``portal`` slowed down; once
        that write is under way, run ``during`` and flush ``second`` (worker 1) meanwhile."""
        spec = ({"portal": "rentix", "method": "PUT", "path": "/listings"} if portal == "rentix"
                else {"portal": "travtus", "method": "POST", "path": "/listing/sync"})
        fault = await self.sandbox.fault(latency_ms=600, count=1, **spec)
        first = asyncio.ensure_future(self.workers[0].flush(group))
        deadline = time.monotonic() + 5
        while not first.done() and time.monotonic() < deadline:
            live = (await self.sandbox._call("GET", "/faults"))["faults"]
            if all(str(f["id"]) != str(fault) for f in live):
                break  # the slow write is under way
            await asyncio.sleep(0.01)
        if during is not None:
            await during()
        if second is not None:
            await self.workers[1].flush(second)
        await first
        await self.sandbox._http.delete(f"/faults/{fault}")  # 404 once it was used

    # -- rules: time --

    @precondition(on("advance"))
    @rule(beyond=st.booleans())
    def time_passes(self, beyond: bool) -> None:
        """Half the horizon, or past it: events waiting in the inbox grow old, and tombstones
        whose time is past the horizon expire."""
        self._begin()
        self.advance(HORIZON_MS + 1_000 if beyond else HORIZON_MS // 2)
        self._end()

    @precondition(on("idle"))
    @rule(group=st.sampled_from(GROUPS))
    def group_idles(self, group: str) -> None:
        """Time passes until the first of the group's idle markers (lb:pending, lb:dirty,
        lb:settled: GROUP_IDLE_MS after they were last set) expires."""
        self._begin()
        ttls = [t for key in (ks().PENDING, ks().DIRTY, ks().SETTLED)
                if (t := int(self.r.pttl(f"{key}{group}"))) > 0]
        if ttls:
            self.advance(min(ttls))
        self._end()

    def advance(self, delta_ms: int) -> None:
        """Let ``delta_ms`` pass: every key's expiry comes that much closer (or has come)."""
        self.offset += delta_ms
        for key in list(self.r.scan_iter(count=1_000)):
            left = int(self.r.pttl(key))
            if left > 0:
                if left <= delta_ms:
                    self.r.delete(key)
                else:
                    self.r.pexpire(key, left - delta_ms)
        self._fix_tombstones()

    def _fix_tombstones(self) -> None:
        """A compacted tombstone expires ``horizon`` after max(time, floor): the flush set
        that expiry by the real clock; here the clock is ahead by the offset."""
        if not self.offset:
            return
        for key in list(self.r.scan_iter(match=f"{ks().LISTING}*", count=1_000)):
            fields = self.r.hgetall(key)
            if fields.get("d") != "1" or "at" in fields or "t" not in fields:
                continue
            keep = max(int(float(fields["t"])), int(float(fields.get("f") or 0))) + HORIZON_MS
            left = keep - self.vnow()
            if left <= 0:
                self.r.delete(key)
            else:
                self.r.pexpire(key, left)

    # -- quiescence --

    async def _settle(self) -> None:
        deadline = time.monotonic() + SETTLE_S
        actions = Actions(self.clients[0], self.settings)
        ledger = Ledger(self.clients[0])
        while True:
            self.fold()
            held = 0
            for target in self.settings.targets:
                for group, entry in (await ledger.held(target.name)).items():
                    held += 1
                    await actions.release(target.name, group, entry.digest)
            now = now_ms()
            due = self.r.zrange(ks().DUE, 0, -1, withscores=True)
            # A time set by the ingest fold runs on the offset clock: due at once; a time set
            # by a flush (backoff, rate limit, a lease) is waited for.
            ready = [g for g, at in due if at <= now or at > now + 5_000]
            for group in ready:
                await self.workers[0].flush(group)
            self._fix_tombstones()
            drained = False
            if self.bulk:
                for name, at in self.r.zrange(ks().SENDERS, 0, -1, withscores=True):
                    if at <= now_ms() or at > now_ms() + 5_000:
                        await self.workers[0].sender.drain(self.rentix)  # type: ignore[arg-type]
                        drained = True
                        assert name == self.rentix.name
            waiting = self.r.exists(f"{ks().OUTBOX}{self.rentix.name}",
                                    f"{ks().OUTBOX_BATCH}{self.rentix.name}")
            if not due and not held and not waiting and not self.r.llen(ks().INBOX):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not quiescent after {SETTLE_S}s: {self._stuck(due)}")
            if not ready and not drained:
                await asyncio.sleep(0.05)

    def _stuck(self, due: list[Any]) -> str:
        outbox, rentix = ks().OUTBOX, self.rentix.name
        backoff = [(key, self.r.hgetall(key)) for key in self.r.scan_iter(f"{ks().BACKOFF}*")]
        targets = [self.r.hgetall(f"{ks().TARGET}{t.name}") for t in self.settings.targets]
        return (f"due {due}, outbox {self.r.hgetall(f'{outbox}{rentix}')}, senders "
                f"{self.r.zrange(ks().SENDERS, 0, -1, withscores=True)}, backoff {backoff}, "
                f"targets {targets}, inbox {self.r.llen(ks().INBOX)}")

    # -- invariants --

    async def _check(self) -> None:
        want = self.model.portals()
        prices = {g: {ref: body["price"]["amount"] for ref, body in listings.items()}
                  for g, listings in want.items()}
        everywhere = {ref: p for listings in prices.values() for ref, p in listings.items()}
        # Rentix: the active listings are exactly the live ones, with their content.
        items = await self.sandbox.rentix_listings()
        active = {i["externalId"]: i["formData"]["announcementValue"] for i in items
                  if i.get("externalId") and i["formData"].get("announcementStatus") == "active"}
        assert active == everywhere, self._explain("rentix", active, everywhere)
        # Travtus: each group holds exactly its live listings.
        for group in GROUPS:
            held = {i["external_reference"]: i["lease_terms"][0]["rent"]
                    for i in await self.sandbox.travtus_listings(group)}
            assert held == prices.get(group, {}), self._explain(f"travtus {group}", held,
                                                                prices.get(group, {}))
            accepted = await Ledger(self.clients[0]).accepted("travtus", group)
            assert set(accepted) == set(held), (
                f"travtus {group}: the ledger holds {sorted(accepted)}, the portal "
                f"{sorted(held)}")
            for ref, record in accepted.items():
                assert record.payload is not None
                assert record.payload["lease_terms"][0]["rent"] == held[ref], (group, ref)
        # Rentix's ledger: every listing that is not deleted has its content accepted.
        adapter = self.workers[0].adapters["rentix"]
        assert isinstance(adapter, RentixAdapter)
        accepted = await Ledger(self.clients[0]).accepted("rentix", None)
        for ref, state in self.model.listings.items():
            if state.deleted or state.body is None:
                continue
            listing = DesiredListing(ref, state.group, state.version, state.occurred_ms, False,
                                     dict(state.body), 0)
            record = accepted.get(ref)
            assert record is not None and record.digest == desired_digest(adapter, listing), (
                f"rentix's ledger for {ref}: {record}, the model's content "
                f"{state.body['price']['amount']} {state.body.get('status')}")
        await self._check_keys()
        self._check_stories()
        assert not self.beyond, (
            f"webhooks acknowledged with a version beyond 2**53 - 1 (the contract: a 400 "
            f"naming the field): {self.beyond}")

    async def _check_keys(self) -> None:
        """An idempotency key is one intent: every request that carried it had one body."""
        bodies: dict[tuple[str, str], bytes] = {}
        for request in await self.sandbox.journal():
            key = request.get("idempotency_key")
            if not key or request.get("cut_off") or request.get("body") is None:
                continue
            where = (request["portal"], key)
            body = orjson.dumps(request["body"], option=orjson.OPT_SORT_KEYS)
            assert bodies.setdefault(where, body) == body, (
                f"idempotency key {key} on {request['portal']} carried two bodies:\n"
                f"{bodies[where][:400]!r}\n{body[:400]!r}")

    def _check_stories(self) -> None:
        """Every acknowledged event is in the story of each listing it names (within the
        stories' retention, while the story has room)."""
        oldest = self.vnow() - self.settings.trace.retention_ms + 60_000
        told: dict[str, set[str]] = {}
        for event in self.acknowledged:
            if event.received_ms < oldest:
                continue
            for item in event.items:
                if item.ref not in told:
                    raw = self.r.lrange(f"{ks().TRACE}{item.ref}", 0, -1)
                    if len(raw) >= k.TRACE_MAXLEN:
                        told[item.ref] = {"*"}
                        continue
                    told[item.ref] = {e["webhook_id"] for e in map(stories.unpack, raw)
                                      if e["kind"] == "event"}
                assert "*" in told[item.ref] or event.webhook_id in told[item.ref], (
                    f"{event.webhook_id} ({event.kind} of {item.ref}) is not in its story")

    def _explain(self, what: str, held: dict[str, Any], want: dict[str, Any]) -> str:
        states = {ref: (s.group, s.version, s.occurred_ms - self.start, s.deleted,
                        (s.body or {}).get("price", {}).get("amount"),
                        (s.body or {}).get("status"), s.floor and s.floor - self.start)
                  for ref, s in sorted(self.model.listings.items())}
        return (f"{what} holds {held}, the model wants {want}; the model's listings "
                f"(group, version, t, deleted, price, status, floor): {states}")


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with serve_app(create_sandbox(SandboxSettings())) as url:
        yield url


def test_the_bridge_delivers_what_the_model_says(
    redis_url: str, sandbox_url: str, model_profile: hypothesis_settings
) -> None:
    BridgeMachine.redis_url = redis_url
    BridgeMachine.sandbox_url = sandbox_url
    run_state_machine_as_test(BridgeMachine, settings=model_profile)
