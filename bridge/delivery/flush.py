"""One group's flush: claim its changes under a lease, then bring every target up to date,
independently.

Each target's outcome decides what happens next: accepted content is recorded (so it is never
sent again), refused content is quarantined for that target alone, transient failures back off
without holding a worker slot (the group is simply due again later), rate limits and invalid
credentials hold the whole target, and the guards judge the group's deletions once for every
target (``guard.py``): what they hold waits for an operator on every target that would remove
something, while the rest of the change flows.

Every write after a portal call goes through the flush's lease (``claims.Lease``): if another
flush has taken the group meanwhile (this worker froze, or lost Redis for longer than the lease),
nothing is written and no further portal call is made.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from bridge.clock import now_ms
from bridge.delivery import budget, outbox
from bridge.delivery.adoption import Adoption
from bridge.delivery.claims import (
    Claim,
    Flushes,
    Lease,
    LeaseLost,
    Stamp,
    Write,
    mark_due,
    stamp,
)
from bridge.delivery.desired import DesiredListing, bare_tombstone, read_listings
from bridge.delivery.guard import NOTHING, GroupGuard, Proposal, Verdict
from bridge.delivery.ledger import (
    Accepted,
    Attempt,
    Held,
    Ledger,
    Quarantined,
    attempt_writes,
    counted_flush,
    intend_writes,
    noted,
    sync_scope,
    token_expiry,
)
from bridge.delivery.outbox import Outbox, Queued
from bridge.delivery.planning import (
    Invalid,
    ListingWrite,
    SyncPlan,
    deletion_cause,
    desired_digest,
    plan_listings,
    plan_sync,
    removes,
    unknown_deletions,
)
from bridge.delivery.ratelimit import RateLimiter
from bridge.delivery.repack import Repacker
from bridge.delivery.results import FlushOutcome, FlushResult
from bridge.delivery.sender import Sender
from bridge.delivery.tombstones import PerListingView, Tombstones, sync_done
from bridge.delivery.trace import FlushTrace
from bridge.delivery.witness import Witness
from bridge.logs import about
from bridge.portals import (
    Outcome,
    PortalError,
    Problem,
    RentixAdapter,
    Result,
    TravtusAdapter,
)
from bridge.settings import RentixTarget, Settings, TravtusTarget

log = logging.getLogger("bridge.delivery.flush")

# A wait for the shared rate limit shorter than this happens in the job; longer ones end the
# target's turn and make the group due again then.
MAX_INLINE_WAIT_MS = 2_000
REFUSED = (Outcome.DATA_INVALID, Outcome.CONFLICT, Outcome.NOT_FOUND)


@dataclass
class ListingTurn:
    """A per-listing target's turn in one flush."""

    target: RentixTarget
    adapter: RentixAdapter
    accepted: dict[str, Accepted]
    attempts: int
    verified: bool
    deadline: float
    adopting: bool
    by_bulk: set[str]  # refs whose writes go through the outbox
    stamps: dict[str, Stamp]  # what each listing's write is planned from
    queued: list[ListingWrite] = field(default_factory=list)
    # A create held for adoption, or deletions held by the guards: the turn settled not
    # everything.
    held: bool = False

    @property
    def bulk_on(self) -> bool:
        return self.target.bulk_per_minute > 0


@dataclass(frozen=True)
class Gate:
    """Adoption's verdict on a possible create: send it, hold it, or end the turn."""

    hold: bool = False
    stop: bool = False
    next_due: int | None = None


def earliest(*times: int | None) -> int | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


class Delivery:
    """What a worker needs to flush groups: built once, one :class:`GroupFlush` per flush."""

    def __init__(self, redis: Redis, settings: Settings,
                 adapters: dict[str, RentixAdapter | TravtusAdapter]) -> None:
        self.redis = redis
        self.settings = settings
        self.adapters = adapters
        self.ledger = Ledger(redis, trace_ttl_ms=settings.trace.retention_ms)
        self.limiter = RateLimiter(redis)
        self.flushes = Flushes(redis, settings.delivery.lease_ms, settings.debounce,
                               [target.name for target in settings.targets])
        self.adoption = Adoption(redis)
        self.witness = Witness(redis)
        self.outbox = Outbox(redis)
        self.tombstones = Tombstones(redis, settings.retention.horizon_ms)
        self.repacker = Repacker(redis)
        rentix = {name: a for name, a in adapters.items() if isinstance(a, RentixAdapter)}
        self.sender = Sender(redis, settings.delivery, rentix, self.ledger, self.limiter)
        # target -> the token expiry this process last recorded (Travtus): written once per
        # token fetched, not with every sync.
        self.token_expiry_recorded: dict[str, int] = {}

    async def flush(self, group: str) -> FlushResult:
        floor = self.witness.floor
        claim = await self.flushes.claim(group, now_ms())
        if claim is None:
            return FlushResult(group, FlushOutcome.TAKEN)
        if not self.witness.saw_token(claim.token, floor):
            await self.witness.state_lost("the fencing counter went back")
        try:
            async with self.flushes.leased(claim) as lease:
                return await GroupFlush(self, claim, lease).run()
        except LeaseLost as exc:
            log.warning("flush of %s stopped: %s", group, exc, extra=about(group=group))
            return FlushResult(group, FlushOutcome.LEASE_LOST)


class GroupFlush:
    """One flush of one group, every target in turn, under one lease."""

    def __init__(self, delivery: Delivery, claim: Claim, lease: Lease) -> None:
        self.d = delivery
        self.settings = delivery.settings
        self.claim = claim
        self.lease = lease
        self.ledger = delivery.ledger.fenced(lease)
        self.adoption = delivery.adoption.fenced(lease)
        self.trace = FlushTrace(self.ledger, claim)  # each listing's story: bridge trace
        # Targets whose turn settled every change the claim holds (lb:settled).
        self.settled: set[str] = set()
        self.desired: dict[str, dict[str, DesiredListing]] = {}  # per group-sync target
        self.guard = GroupGuard(claim.group, [t.name for t in self.settings.targets],
                                self.settings.guard)

    @property
    def group(self) -> str:
        return self.claim.group

    @counted_flush
    async def run(self) -> FlushResult:
        self.epoch = await self.d.witness.epoch()
        # Stop starting new calls well before the job timeout; the rest goes in the next turn.
        deadline = time.monotonic() + self.settings.delivery.job_timeout_s * 0.6
        targets = self.settings.targets
        results = await asyncio.gather(*[self._judged_turn(t, deadline) for t in targets],
                                       return_exceptions=True)
        next_due: int | None = None
        for target, result in zip(targets, results, strict=True):
            if isinstance(result, LeaseLost):
                raise result
            if isinstance(result, BaseException):
                log.exception("flush of %s for %s failed", self.group, target.name,
                              exc_info=result, extra=about(self.group, target.name))
                result = await self._backoff(target.name, f"bridge error: {result!r}")
            next_due = earliest(next_due, result)
        # Bodies the webhook stored as they came are kept packed from now on.
        await self.d.repacker.repack(self.claim.listings)
        if next_due is None and all(r is None for r in results):
            await self._compact()
        clean = await self.d.flushes.finish(self.claim, next_due, sorted(self.settled))
        done = clean and next_due is None
        return FlushResult(self.group, FlushOutcome.DONE if done else FlushOutcome.MORE_TO_DO)

    async def _compact(self) -> None:
        """Deleted listings every target is done with become bare tombstones
        (``tombstones.py``): their bodies and ledger entries go."""
        deleted = [listing for listing in self.claim.listings if listing.deleted
                   and listing.occurred_ms]
        if not deleted:
            return
        refs = [listing.ref for listing in deleted]
        done = set(refs)
        for target in self.settings.targets:
            done &= await self._done_with(target, deleted)
            if not done:
                return
        names = [t.name for t in self.settings.targets]
        per_listing = [t.name for t in self.settings.targets if isinstance(t, RentixTarget)]
        compacted = await self.d.tombstones.compact(
            self.group, self.claim.token, now_ms(),
            [listing for listing in deleted if listing.ref in done], names, per_listing)
        if compacted < 0:
            raise LeaseLost(f"group {self.group!r} was claimed by another flush")

    async def _done_with(self, target: RentixTarget | TravtusTarget,
                         deleted: list[DesiredListing]) -> set[str]:
        """Which of these deleted listings the target holds no more (or never held)."""
        refs = [listing.ref for listing in deleted]
        adapter = self.d.adapters[target.name]
        if isinstance(adapter, RentixAdapter):
            view = PerListingView(
                await self.ledger.accepted(target.name, None, refs),
                await self.ledger.intents(target.name, refs),
                await self.d.outbox.waiting(target.name, refs),
                {listing.ref: desired_digest(adapter, listing) for listing in deleted})
            return {ref for ref in refs if view.done(ref)}
        held = set(await self.ledger.accepted(target.name, self.group, refs))
        in_doubt = bool(await self.ledger.intents(target.name, [sync_scope(self.group)]))
        return {ref for ref in refs if sync_done(held, in_doubt, ref)}

    async def _judged_turn(self, target: RentixTarget | TravtusTarget, deadline: float
                           ) -> int | None:
        """A target's turn; however it ends, the guards no longer wait for its proposal."""
        try:
            return await self._turn(target, deadline)
        finally:
            self.guard.leave(target.name)

    async def _turn(self, target: RentixTarget | TravtusTarget, deadline: float) -> int | None:
        state = await self.ledger.target_state(target.name)
        if state.get("paused"):
            await self.trace.paused(target.name, state["paused"])
            return None  # changes accumulate; resuming makes every group due
        blocked = int(state.get("blocked_until") or 0)
        if blocked > now_ms():
            return await self.trace.rate_limited(target.name, blocked)
        _, not_before = await self.ledger.backoff(target.name, self.group)
        if not_before > now_ms():
            return await self.trace.retrying(target.name, not_before, "backing off")
        adapter = self.d.adapters[target.name]
        if isinstance(adapter, RentixAdapter):
            assert isinstance(target, RentixTarget)
            return await self._per_listing(target, adapter, deadline)
        assert isinstance(target, TravtusTarget)
        return await self._group_sync(target, adapter)

    # -- per-listing portals (Rentix) --

    async def _per_listing(self, target: RentixTarget, adapter: RentixAdapter,
                           deadline: float) -> int | None:
        name = target.name
        # Redis may have lost state since this group was last checked: before creating what
        # the ledger does not know, ask the portal whether it holds it already; and plan every
        # member, not only the changes (what the ledger said was settled may be gone).
        verified = (not self.d.witness.lost
                    or await self.ledger.verified(name, self.group) == self.epoch)
        desired = self.claim.unsettled(name) if verified else await self._every_member()
        refs = [listing.ref for listing in desired]
        accepted = await self.ledger.accepted(name, None, refs)
        quarantined = await self.ledger.quarantined(name, refs)
        intents = await self.ledger.intents(name, refs)
        plan = plan_listings(name, adapter, desired, accepted, quarantined, intents)
        await self.trace.listings_planned(name, adapter, plan, accepted, quarantined)
        await self._quarantine(name, plan.invalid)
        # Deletions the guards hold go neither as single writes nor by bulk; the rest flows.
        withheld, released = await self._judge_listings(name, adapter, desired, plan.writes)
        writes = [write for write in plan.writes if write.ref not in withheld]
        attempts, _ = await self.ledger.backoff(name, self.group)
        turn = ListingTurn(target, adapter, accepted, attempts, verified, deadline,
                           await self.adoption.active(target),
                           await self._by_bulk(target, writes),
                           {listing.ref: stamp(listing) for listing in desired},
                           held=bool(withheld))
        stop = await self._write_each(turn, writes)
        await self._enqueue(turn)
        if stop is not False:
            return stop
        if attempts:
            await self.ledger.clear_backoff(name, self.group)
        if not verified:
            await self.ledger.mark_verified(name, self.group, self.epoch)
        if not turn.held:
            self.settled.add(name)  # sent, queued for bulk, or quarantined: all settled
            if released:  # the released deletions went: the operator's decision is spent
                await self.ledger.unhold(name, self.group)
        return None

    async def _judge_listings(self, name: str, adapter: RentixAdapter,
                              desired: list[DesiredListing], writes: list[ListingWrite]
                              ) -> tuple[set[str], bool]:
        """The guards' verdict on what these writes would remove (``_withheld``)."""
        proposal = await self._listing_proposal(name, adapter, desired, writes)
        if proposal is None:
            self.guard.leave(name)
            return await self._withheld(name, NOTHING)
        return await self._withheld(name, await self.guard.judge(name, proposal))

    async def _by_bulk(self, target: RentixTarget, writes: list[ListingWrite]) -> set[str]:
        """The writes that go by bulk (through the outbox): all of them when more are waiting
        than single PUTs would send within ``bulk_after_s`` (the outbox, these writes, and
        the PUTs the shared rate limit has already let through); else only those whose
        listing waits in the outbox already, so a PUT never overtakes an older bulk write."""
        refs = [write.ref for write in writes]
        waiting = await self.d.outbox.waiting(target.name, refs)
        if not writes or target.bulk_per_minute <= 0:
            return waiting
        backlog_ms = await self.d.limiter.backlog_ms(target.name, now_ms())
        booked = backlog_ms * target.requests_per_minute // 60_000
        depth = await self.d.outbox.depth(target.name)
        if depth + len(writes) + booked > target.bulk_threshold:
            return set(refs)
        return waiting

    async def _write_each(self, turn: ListingTurn, writes: list[ListingWrite]
                          ) -> int | bool | None:
        """Send or queue each write in turn; False when all went, else when the group is due
        again (None: not for this target). A write that would wait for the rate limit, the
        job's deadline or a spent window goes by bulk instead, when the target has it."""
        name, adapter = turn.target.name, turn.adapter
        for write in writes:
            self.trace.turn_to(name, write.ref)
            if time.monotonic() > turn.deadline:
                return now_ms()  # the rest in the next turn; what is queued goes now
            inline = write.ref not in turn.by_bulk
            if inline and (stop := await self._inline_stop(turn)) is not None:
                if not turn.bulk_on:
                    return stop
                turn.by_bulk.update(w.ref for w in writes)  # the rest go by bulk
                inline = False
            if turn.adopting and write.ref not in turn.accepted:
                gate = await self._adoption_gate(turn.target, adapter, write.ref)
                if gate.stop:
                    return gate.next_due
                if gate.hold:
                    turn.held = True  # goes once linked or adoption ends (a mark_due)
                    await self.trace.adoption(name, write.ref)
                    continue
            if not turn.verified and write.ref not in turn.accepted and write.new_intent:
                wait = await self._rate_slot(name, turn.target.requests_per_minute)
                if wait:
                    return wait
                held = await self._already_held(adapter, write, turn.stamps[write.ref])
                if isinstance(held, Result):
                    return await self._setback(name, held)
                if held:
                    continue
            if not inline:
                turn.queued.append(write)
                continue
            wait = await self._rate_slot(name, turn.target.requests_per_minute)
            if wait:
                if not turn.bulk_on:
                    return wait
                turn.by_bulk.update(w.ref for w in writes)
                turn.queued.append(write)
                continue
            if write.new_intent:
                await self.ledger.intend(name, {write.ref: write.intent})
            result = await self._send_listing(adapter, write)
            stop = await self._settle_listing(name, write, result, turn)
            if stop is not False:
                return stop
        return False

    async def _inline_stop(self, turn: ListingTurn) -> int | None:
        """Why single writes must stop now, as when to come back: a window the portal said is
        spent (every worker then waits for its reset)."""
        if (reset := _exhausted(turn.adapter)) is not None:
            if turn.bulk_on:
                return reset
            await self.ledger.block_until(turn.target.name, reset, "rate-limit window spent")
            return await self.trace.rate_limited(turn.target.name, reset)
        return None

    async def _enqueue(self, turn: ListingTurn) -> None:
        """Put the turn's queued writes in the target's outbox with their intents: one write,
        fenced."""
        name, writes = turn.target.name, turn.queued
        if not writes:
            return
        now = now_ms()
        fresh = {write.ref: write.intent for write in writes if write.new_intent}
        entries = [Queued.of(w, self.group, now, turn.stamps[w.ref]) for w in writes]
        await self.ledger.apply([*intend_writes(name, fresh),
                                 *outbox.put_writes(name, entries, now)])
        await self.trace.queued(name, writes)

    async def _already_held(self, adapter: RentixAdapter, write: ListingWrite, planned: Stamp
                            ) -> bool | Result:
        """Does the portal hold this write's content already? Then the ledger learns it and
        nothing is sent. The failed read's result when the portal could not be read."""
        self.lease.ensure()
        found = await adapter.get_by_external_id(write.ref)
        self.lease.ensure()
        if found.outcome is Outcome.NOT_FOUND:
            if write.operation == "upsert":
                return False
        elif not found.ok or not isinstance(found.body, dict):
            return found
        elif adapter.held_by_portal(write.payload, found.body):
            return False
        # Held as desired, or nothing there to hide or delete.
        await self.ledger.record_accepted(adapter.name, write.ref,
                                          Accepted(write.digest, write.payload, now_ms()),
                                          planned)
        return True

    async def _settle_listing(self, name: str, write: ListingWrite, result: Result,
                              turn: ListingTurn) -> int | bool | None:
        """Record one write's outcome; False to go on with the next write, else when the
        group is due again (None: not for this target)."""
        try:
            await self._record(name, write.operation, [write.ref], write.key, result,
                               turn.attempts + 1,
                               [now_ms() - write.received_ms] if result.ok else [])
            if result.ok:
                await self.ledger.record_accepted(
                    name, write.ref, Accepted(write.digest, write.payload, now_ms()),
                    turn.stamps[write.ref], write.key)
                return False
        except LeaseLost:
            if result.ok:
                await self._after_lost_write(name, write.ref, write.digest)
            raise
        if result.outcome in REFUSED:
            await self._quarantine(name, [Invalid(write.ref, _problem(result), write.digest)])
            return False
        return await self._setback(name, result)

    async def _adoption_gate(self, target: RentixTarget, adapter: RentixAdapter,
                             ref: str) -> Gate:
        """In adoption, a write for a ref this target never accepted creates a listing beside
        the hand-made one, unless Rentix already holds the ref: look it up once, then send
        (linked) or hold it until the ref is linked or adoption ends."""
        adoption = self.adoption
        if await adoption.is_linked(target.name, ref):
            return Gate()
        if await adoption.is_held(target.name, ref):
            return Gate(hold=True)
        wait = await self._rate_slot(target.name, target.requests_per_minute)
        if wait:
            return Gate(stop=True, next_due=wait)
        self.lease.ensure()
        found = await adapter.get_by_external_id(ref)
        self.lease.ensure()
        if found.ok:
            await adoption.mark_linked(target.name, [ref])
            return Gate()
        if found.outcome is Outcome.NOT_FOUND:
            await adoption.hold(target.name, ref, self.group, now_ms())
            return Gate(hold=True)
        return Gate(stop=True, next_due=await self._setback(target.name, found))

    async def _send_listing(self, adapter: RentixAdapter, write: ListingWrite) -> Result:
        await self.trace.sent(adapter.name, write)
        self.lease.ensure()
        if write.operation == "delete":
            return await adapter.delete(write.ref, write.key)
        return await adapter.upsert(write.payload, write.key)

    # -- group-sync portals (Travtus) --

    async def _group_sync(self, target: TravtusTarget, adapter: TravtusAdapter) -> int | None:
        name, group = target.name, self.group
        plan, accepted, quarantined, last = await self._plan_sync(name, adapter)
        await self.trace.sync_planned(name, adapter, plan, accepted, quarantined)
        await self._quarantine(name, plan.invalid)
        if plan.unchanged or (last is None and not plan.listings and not accepted
                              and not await self._sync_in_doubt(name)):
            # Unchanged, or a group we have never synced with nothing to say: no change to
            # judge, and a change held before is no more.
            self.guard.leave(name)
            await self._withheld(name, NOTHING)
            self.settled.add(name)
            return None
        if _quarantined_sync(plan, quarantined.get(sync_scope(group))):
            return None
        try:
            proposal, on_portal = await self._sync_proposal(name, adapter, plan, accepted, last)
        except PortalError as exc:
            return await self._setback(name, exc.result)
        withheld, released = await self._withheld(name, await self.guard.judge(name, proposal))
        if withheld:
            return await self._sync_withheld(target, adapter, withheld, accepted)
        if not released and on_portal is not None and _holds_exactly(adapter, plan, on_portal):
            # The portal already holds the group as desired (say, after Redis lost its
            # data): the ledger learns it, and nothing is written.
            await self.ledger.record_sync(name, group, plan.digest, plan.records,
                                          plan.fresh, self.epoch, accepted,
                                          self._planned(name, plan))
            await self.trace.unchanged(name, "the portal holds it already")
            self.settled.add(name)
            return None
        return await self._send_sync(target, adapter, plan, accepted)

    async def _sync_withheld(self, target: TravtusTarget, adapter: TravtusAdapter,
                             withheld: set[str], accepted: dict[str, Accepted]) -> int | None:
        """The change's deletions are held back: the sync keeps those listings as the portal
        holds them and carries the rest of the change. Nothing is sent when it would still
        delete listings the ledger has no record of (never sent there, or unreadable)."""
        if withheld - set(accepted):
            return None
        plan, accepted, _, _ = await self._plan_sync(target.name, adapter, keep=withheld)
        if plan.unchanged or plan.deletions:
            return None
        return await self._send_sync(target, adapter, plan, accepted, holding=True)

    async def _send_sync(self, target: TravtusTarget, adapter: TravtusAdapter, plan: SyncPlan,
                         accepted: dict[str, Accepted], holding: bool = False) -> int | None:
        """Send the sync and record its outcome. ``holding``: it keeps listings whose deletion
        is held, so the held change stays (and the turn settles nothing)."""
        name, group = target.name, self.group
        wait = await self._rate_slot(name, target.requests_per_minute)
        if wait:
            return wait
        attempts, _ = await self.ledger.backoff(name, group)
        if plan.new_intent:
            await self.ledger.intend(name, {sync_scope(group): plan.intent})
        await self.trace.sync_sent(name, plan)
        self.lease.ensure()
        result = await adapter.sync(group, plan.listings, plan.key)
        latencies = [now_ms() - plan.received_ms[r] for r in plan.fresh] if result.ok else []
        try:
            await self._record(name, "sync", plan.refs, plan.key, result, attempts + 1,
                               latencies)
            if result.ok:
                await self.ledger.record_sync(name, group, plan.digest, plan.records,
                                              plan.fresh, self.epoch, accepted,
                                              self._planned(name, plan), keep_held=holding)
        except LeaseLost:
            if result.ok:
                await self._after_lost_write(name, sync_scope(group), plan.digest)
            raise
        if result.ok:
            if attempts:
                await self.ledger.clear_backoff(name, group)
            if not holding:
                self.settled.add(name)
            return None
        return await self._sync_refused(name, plan, result)

    def _planned(self, name: str, plan: SyncPlan) -> dict[str, Stamp]:
        """What the sync's fresh listings were planned from."""
        desired = self.desired[name]
        return {ref: stamp(desired[ref]) for ref in plan.fresh}

    async def _sync_in_doubt(self, name: str) -> bool:
        """A sync recorded as in flight and never answered (its flush lost the lease, or died)
        may have reached the portal: the group is not one that was never synced."""
        return bool(await self.ledger.intents(name, [sync_scope(self.group)]))

    async def _plan_sync(self, name: str, adapter: TravtusAdapter, keep: set[str] | None = None
                         ) -> tuple[SyncPlan, dict[str, Accepted], dict[str, Quarantined],
                                    str | None]:
        """The group's whole state for a sync. Members the target has settled keep the payload
        it accepted (not read, not mapped again); only the changes are planned afresh, unless
        the target settled nothing or Redis may have lost state since it was last checked.
        ``keep``: listings whose deletion is held, kept in the sync as the target accepted
        them."""
        group = self.group
        accepted = await self.ledger.accepted(name, group)
        whole = (self.claim.settled.get(name) is None
                 or await self.ledger.verified(name, group) != self.epoch)
        kept = {} if whole else {ref: accepted[ref] for ref in self.claim.others
                                 if ref in accepted}
        kept.update({ref: accepted[ref] for ref in keep or () if ref in accepted})
        desired = [*self.claim.listings,
                   *await self._listings_of([r for r in self.claim.others if r not in kept])]
        self.desired[name] = {listing.ref: listing for listing in desired}
        refs = [listing.ref for listing in desired]
        quarantined = await self.ledger.quarantined(name, [*refs, sync_scope(group)])
        last = await self.ledger.sync_digest(name, group)
        intent = (await self.ledger.intents(name, [sync_scope(group)])).get(sync_scope(group))
        # Listings that left the group: where they went, if anywhere (why the sync deletes them).
        elsewhere = await read_listings(self.d.redis,
                                        sorted(set(accepted) - set(refs) - set(kept)))
        plan = plan_sync(adapter, group, desired, accepted, quarantined, last, now_ms(),
                         intent, elsewhere, kept)
        return plan, accepted, quarantined, last

    async def _every_member(self) -> list[DesiredListing]:
        """Every member's desired state: the claimed ones and the settled rest, read now."""
        rest = await self._listings_of(self.claim.others)
        return sorted([*self.claim.listings, *rest], key=lambda listing: listing.ref)

    async def _listings_of(self, refs: list[str]) -> list[DesiredListing]:
        """The desired state of these members (a member without a hash reads as a bare
        tombstone, as in a claim)."""
        found = await read_listings(self.d.redis, refs)
        return [found.get(ref) or bare_tombstone(ref, self.group) for ref in refs]

    # -- the guards: one decision per group flush (guard.py) --

    async def _withheld(self, name: str, verdict: Verdict) -> tuple[set[str], bool]:
        """What the verdict means for this target: the refs whose deletion it keeps back
        (held for an operator, or discarded by one), and whether an operator released them.
        A held entry this target no longer holds goes."""
        entry = await self.ledger.held_of(name, self.group)
        if not verdict.holds(name):
            if entry is not None:
                await self.ledger.unhold(name, self.group)
            return set(), False
        if await self.ledger.released_digest(name, self.group) == verdict.digest:
            return set(), True
        if await self._discarded(name, verdict.digest):
            return verdict.refs, False
        if entry is None or (entry.digest, entry.reason) != (verdict.digest, verdict.reason):
            held = verdict.held()
            await self.ledger.hold(name, self.group, held)
            await self.trace.held(name, held, whole=name not in self._per_listing_targets)
            log.warning("holding the deletions of %s on %s: %s", self.group, name,
                        held.reason, extra=about(self.group, name))
        return verdict.refs, False

    @property
    def _per_listing_targets(self) -> set[str]:
        return {t.name for t in self.settings.targets if isinstance(t, RentixTarget)}

    async def _discarded(self, name: str, digest: str) -> bool:
        """An operator discarded this very change, and the group has not changed since. Once
        it has, the discard is spent: the change is judged afresh (and held again if need
        be)."""
        marker = await self.ledger.discarded(name, self.group)
        if marker is None:
            return False
        marked, seq = marker
        if seq == self.claim.seq and marked == digest:
            return True
        if seq != self.claim.seq:
            await self.ledger.forget_discard(name, self.group)
        return False

    async def _listing_proposal(self, name: str, adapter: RentixAdapter,
                                desired: list[DesiredListing], writes: list[ListingWrite]
                                ) -> Proposal | None:
        """What a per-listing turn's writes would remove from the group, and the group's
        size on the portal (members it holds, not already taken down); None: nothing."""
        members = {listing.ref: listing for listing in desired}
        holds = await self.ledger.accepted(name, None, self.claim.members)
        removing = [w for w in writes if removes(w, members[w.ref], w.ref in holds)]
        if not removing:
            return None
        gone = {w.ref for w in removing}
        present = {ref for ref, record in holds.items()
                   if record.digest != desired_digest(adapter, bare_tombstone(ref, self.group))}
        creates = sum(1 for w in writes if w.ref not in holds and w.ref not in gone)
        deletions = [deletion_cause(w.ref, self.group, members[w.ref], None) for w in removing]
        return Proposal(deletions, len(present - gone) + creates, len(present))

    async def _sync_proposal(self, name: str, adapter: TravtusAdapter, plan: SyncPlan,
                             accepted: dict[str, Accepted], last: str | None
                             ) -> tuple[Proposal, list[dict[str, Any]] | None]:
        """What a sync would delete. The portal is read first whenever the sync deletes
        anything, on the group's first sync, and whenever Redis may have lost state since the
        group was last checked (another epoch): what it holds that the bridge does not know
        would be deleted too, and counts as inferred."""
        deletions = list(plan.deletions)
        unknown: list[str] = []
        unreadable: list[str] = []
        on_portal: list[dict[str, Any]] | None = None
        verified = await self.ledger.verified(name, plan.group)
        members = self.desired.get(name, {})
        # An unreadable listing the sync cannot carry: only the portal says if it would go.
        dark = any(m.unreadable is not None and ref not in plan.records
                   for ref, m in members.items())
        if deletions or last is None or verified != self.epoch or dark:
            self.lease.ensure()
            on_portal = await adapter.find_all(plan.group)
            self.lease.ensure()
            known = set(self.claim.members)
            portal_refs = {str(item.get("external_ref")) for item in on_portal}
            unknown = sorted(portal_refs - known - set(plan.records) - set(accepted))
            deletions += unknown_deletions(unknown)
            deleted_refs = {d.ref for d in deletions}
            # Known listings the portal holds that the sync leaves out, the ledger unaware.
            left_out = sorted(portal_refs & set(members) - set(plan.records) - deleted_refs)
            deletions += [deletion_cause(ref, plan.group, members[ref], None)
                          for ref in left_out]
            # A listing whose stored state cannot be read is left out of the sync: on the
            # portal, the ledger unaware, the sync would delete what nobody asked to delete.
            unreadable = [ref for ref in left_out if members[ref].unreadable is not None]
        forced: list[str] = []
        if unknown:  # never deleted without an operator, whatever the guard settings
            first = "first sync of the group, and " if last is None else ""
            forced.append(f"{first}the portal holds {len(unknown)} listing(s) the bridge has "
                          "never heard of; the sync would delete them")
        if unreadable:  # likewise: an operator decides
            forced.append(f"the portal holds {len(unreadable)} listing(s) whose stored state "
                          f"the bridge cannot read ({', '.join(unreadable[:5])}); the sync "
                          "would delete them")
        proposal = Proposal(deletions, len(plan.listings), len(accepted) or len(deletions),
                            "; ".join(forced) or None, unknown)
        return proposal, on_portal

    async def _sync_refused(self, name: str, plan: SyncPlan, result: Result) -> int | None:
        group = self.group
        if result.outcome in REFUSED:
            ref = result.listing_ref
            if ref and ref in plan.records:
                # Quarantine that listing and try again at once without it.
                invalid = Invalid(ref, _problem(result), plan.records[ref].digest)
                await self._quarantine(name, [invalid], settled=[sync_scope(group)])
                return now_ms()
            await self._quarantine(name, [Invalid(sync_scope(group), _problem(result),
                                                  plan.digest)])
            return None
        if result.outcome is Outcome.CREDENTIALS_INVALID and result.error_type == \
                "no_access_to_group":
            reason = f"the portal refuses access to this group: {result.message}"
            held = Held(plan.digest, reason, [], len(plan.listings), now_ms())
            await self.ledger.hold(name, group, held)
            await self.trace.held(name, held)
            log.warning("holding the sync of %s on %s: %s", group, name, reason,
                        extra=about(group, name))
            return None
        return await self._setback(name, result)

    # -- shared --

    async def _after_lost_write(self, name: str, scope: str, digest: str) -> None:
        """This flush's write reached the portal but another flush owns the group now. If that
        one has since recorded other content, the portal may hold ours instead: distrust the
        record (unfenced: it can only cause the desired content to be sent again)."""
        if scope.startswith(sync_scope("")):
            current = await self.d.ledger.sync_digest(name, self.group)
        else:
            record = (await self.d.ledger.accepted(name, None, [scope])).get(scope)
            current = record.digest if record else None
        if current != digest:
            listing = None if scope.startswith(sync_scope("")) else scope
            log.warning("a write for %s reached %s after the lease on %s lapsed; "
                        "it will be sent again", scope, name, self.group,
                        extra=about(self.group, name, listing))
            await self.d.ledger.distrust(name, scope)
            await mark_due(self.d.redis, [self.group], now_ms())

    async def _rate_slot(self, target: str, per_minute: int) -> int | None:
        """Wait briefly for the shared rate limit, or return when to come back."""
        while True:
            wait = await self.d.limiter.acquire(target, per_minute, now_ms())
            if not wait:
                return None
            if wait > MAX_INLINE_WAIT_MS:
                return await self.trace.rate_limited(target, now_ms() + wait)
            await asyncio.sleep(wait / 1000)

    async def _setback(self, target: str, result: Result) -> int | None:
        reason = f"{result.outcome}: {result.error_type or result.status or ''} {result.message}"
        if result.outcome is Outcome.CREDENTIALS_INVALID:
            await self.ledger.pause(target, reason.strip())
            await self.trace.paused(target, reason.strip())
            log.error("pausing %s (by the bridge: credentials refused): %s", target, reason,
                      extra=about(self.group, target))
            return None
        if result.outcome is Outcome.RATE_LIMITED:
            until = int(result.retry_at * 1000) if result.retry_at else None
            if until is None or until <= now_ms():
                return await self._backoff(target, reason)
            await self.ledger.block_until(target, until, reason.strip())
            return await self.trace.rate_limited(target, until)
        return await self._backoff(target, reason)

    async def _backoff(self, target: str, reason: str) -> int:
        """Exponential backoff with full jitter; the group is simply due again then."""
        attempts, _ = await self.ledger.backoff(target, self.group)
        delivery = self.settings.delivery
        ceiling = min(delivery.retry_max_s, delivery.retry_base_s * 2 ** attempts)
        not_before = now_ms() + int(1000 * random.uniform(ceiling / 2, ceiling))
        await self.ledger.set_backoff(target, self.group, attempts + 1, not_before,
                                      reason.strip())
        log.info("delivery of %s to %s failed (%s); next try in %.1f s", self.group, target,
                 reason.strip(), (not_before - now_ms()) / 1000, extra=about(self.group, target))
        return await self.trace.retrying(target, not_before, reason.strip())

    async def _quarantine(self, target: str, invalid: list[Invalid],
                          settled: list[str] | None = None) -> None:
        entries = {item.ref: Quarantined(item.digest, self.group, item.problem.error_type,
                                         item.problem.message, item.problem.field, now_ms())
                   for item in invalid}
        await self.ledger.quarantine(target, entries, settled or ())
        await self.trace.quarantined(target, entries)
        for ref, entry in entries.items():
            listing = None if ref == sync_scope(self.group) else ref
            log.info("quarantined %s on %s: %s", ref, target, entry.message,
                     extra=about(self.group, target, listing))

    async def _record(self, target: str, operation: str, refs: list[str], key: str,
                      result: Result, attempt: int, latencies: list[int]) -> None:
        error = "" if result.ok else f"{result.error_type or ''} {result.message}".strip()
        entry = Attempt(now_ms(), target, self.group, operation, refs[:50], key,
                        str(result.outcome), result.status, round(result.latency_ms, 1),
                        attempt, error)
        # What the answers told about the target goes in the same atomic write: no extra
        # round trip per call.
        token = self._new_token_expiry(target)
        await self.ledger.apply([*attempt_writes(entry, latencies, self.ledger.trace_ttl_ms,
                                                 self.trace.call_refs(target, refs)),
                                 *self._budget_seen(target, entry.at),
                                 *([] if token is None else [token_expiry(target, token)])])
        if token is not None:
            self.d.token_expiry_recorded[target] = token

    def _budget_seen(self, target: str, at: int) -> list[Write]:
        """A per-listing portal's general budget as its last answer's X-RateLimit-* headers
        said (a single write: PUT, hide, delete; bulks record theirs in the sender)."""
        adapter = self.d.adapters[target]
        if not isinstance(adapter, RentixAdapter):
            return []
        return noted(budget.command(target, {"general": budget.from_headers(adapter.rate_limit,
                                                                            at)}))

    def _new_token_expiry(self, target: str) -> int | None:
        """A group-sync portal's token expiry, when this process fetched a token it has not
        recorded yet (so once per token, not with every sync)."""
        adapter = self.d.adapters[target]
        if not isinstance(adapter, TravtusAdapter):
            return None
        expires = adapter.tokens.expires_at
        return None if expires == self.d.token_expiry_recorded.get(target) else expires

def _holds_exactly(adapter: TravtusAdapter, plan: SyncPlan, on_portal: list[dict[str, Any]]
                   ) -> bool:
    """The portal's group is exactly what the sync would make it: every listing as planned,
    nothing else."""
    items = {adapter.portal_ref(item): item for item in on_portal}
    if set(items) != set(plan.records):
        return False
    return all(record.payload is not None and not adapter.held_by_portal(record.payload,
                                                                         items[ref])
               for ref, record in plan.records.items())


def _exhausted(adapter: RentixAdapter) -> int | None:
    info = adapter.rate_limit
    if info.remaining == 0 and info.reset and info.reset * 1000 > now_ms():
        return int(info.reset * 1000)
    return None


def _problem(result: Result) -> Problem:
    return Problem(result.error_type or str(result.outcome), result.message or "",
                   result.field, result.listing_ref)


def _quarantined_sync(plan: SyncPlan, entry: Quarantined | None) -> bool:
    return entry is not None and entry.digest == plan.digest
