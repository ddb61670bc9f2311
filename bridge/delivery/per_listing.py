"""Delivery to a per-listing portal (Rentix): each listing's write on its own, by external ID,
as a single call or through the outbox by bulk (``sender.py``); adoption may hold creates, and
a portal whose state Redis may have lost is read before anything is created."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bridge.clock import now_ms
from bridge.delivery import budget, outbox
from bridge.delivery.ahead import ahead_key, early_creates
from bridge.delivery.claims import (
    LeaseLost,
    Stamp,
    Write,
    stamp,
)
from bridge.delivery.desired import DesiredListing, bare_tombstone
from bridge.delivery.guard import NOTHING, Proposal
from bridge.delivery.ledger import (
    Accepted,
    intend_writes,
    noted,
)
from bridge.delivery.outbox import Queued, place
from bridge.delivery.planning import (
    Invalid,
    ListingWrite,
    deletion_cause,
    desired_digest,
    plan_listings,
    removes,
)
from bridge.delivery.ratelimit import DEFAULT_BURST
from bridge.delivery.tombstones import PerListingView
from bridge.delivery.turns import MAX_INLINE_WAIT_MS, REFUSED, FlushScope, problem
from bridge.portals import (
    Outcome,
    RentixAdapter,
    Result,
)
from bridge.settings import RentixTarget


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
    waited_ms: int = 0  # for the general budget, by this turn's PUTs so far
    # A create held for adoption, or deletions held by the guards: the turn settled not
    # everything.
    held: bool = False

    @property
    def bulk_on(self) -> bool:
        return self.target.bulk_per_minute > 0

    @property
    def burst(self) -> int:
        """The burst this turn's own PUTs take the general budget with: with bulks on, one
        less than a bulk's, so a bulk always finds its general request free (as the sender's
        PUT lane leaves it: sender.py). At an equal burst, a cold start's inline PUTs, polling
        the same bucket, took every slot as it freed and held the first bulks back for up to
        ~7 s (measured, issue 30). The turn's reads (adoption's look-up, the read-back before
        a create) keep a bulk's burst: they gate writes the flush is still planning."""
        return DEFAULT_BURST - 1 if self.bulk_on else DEFAULT_BURST


@dataclass(frozen=True)
class Gate:
    """Adoption's verdict on a possible create: send it, hold it, or end the turn."""

    hold: bool = False
    stop: bool = False
    next_due: int | None = None


class PerListingFlow:
    """A per-listing target's part in one flush (a :class:`~bridge.delivery.turns.TargetFlow`)."""

    def __init__(self, scope: FlushScope, target: RentixTarget, adapter: RentixAdapter) -> None:
        self.f = scope
        self.target = target
        self.adapter = adapter

    async def turn(self, deadline: float) -> int | None:
        return await self._per_listing(self.target, self.adapter, deadline)

    async def done_with(self, deleted: list[DesiredListing]) -> set[str]:
        refs = [listing.ref for listing in deleted]
        name, ledger = self.target.name, self.f.ledger
        view = PerListingView(
            await ledger.accepted(name, None, refs),
            await ledger.intents(name, refs),
            await self.f.d.outbox.waiting(name, refs),
            {listing.ref: desired_digest(self.adapter, listing) for listing in deleted})
        return {ref for ref in refs if view.done(ref)}

    async def _per_listing(self, target: RentixTarget, adapter: RentixAdapter,
                           deadline: float) -> int | None:
        name = target.name
        # Redis may have lost state since this group was last checked: before creating what
        # the ledger does not know, ask the portal whether it holds it already; and plan every
        # member, not only the changes (what the ledger said was settled may be gone).
        verified = (not self.f.d.witness.lost
                    or await self.f.ledger.verified(name, self.f.group) == self.f.epoch)
        desired = self.f.claim.unsettled(name) if verified else await self.f.every_member()
        refs = [listing.ref for listing in desired]
        accepted = await self.f.ledger.accepted(name, None, refs)
        quarantined = await self.f.ledger.quarantined(name, refs)
        intents = await self.f.ledger.intents(name, refs)
        plan = plan_listings(name, adapter, desired, accepted, quarantined, intents)
        await self.f.trace.listings_planned(name, adapter, plan, accepted, quarantined)
        await self.f.quarantine(name, plan.invalid)
        # Deletions the guards hold go neither as single writes nor by bulk; the rest flows.
        withheld, released = await self._judge_listings(name, adapter, desired, plan.writes)
        writes = [write for write in plan.writes if write.ref not in withheld]
        attempts, _ = await self.f.ledger.backoff(name, self.f.group)
        turn = ListingTurn(target, adapter, accepted, attempts, verified, deadline,
                           await self.f.adoption.active(target),
                           await self._by_bulk(target, writes),
                           {listing.ref: stamp(listing) for listing in desired},
                           held=bool(withheld))
        stop = await self._write_each(turn, writes)
        await self._enqueue(turn)
        if stop is not False:
            return stop
        if attempts:
            await self.f.ledger.clear_backoff(name, self.f.group)
        if not verified:
            await self.f.ledger.mark_verified(name, self.f.group, self.f.epoch)
        if not turn.held:
            self.f.settled.add(name)  # sent, queued for bulk, or quarantined: all settled
            # The writes taken ahead of this flush are judged with its change. (None is taken
            # while it holds the group, so all of them were.)
            await self.f.lease.apply([Write("forget ahead", (ahead_key(name, self.f.group),),
                                            ())])
            if released:  # the released deletions went: the operator's decision is spent
                await self.f.ledger.unhold(name, self.f.group)
        return None

    async def _judge_listings(self, name: str, adapter: RentixAdapter,
                              desired: list[DesiredListing], writes: list[ListingWrite]
                              ) -> tuple[set[str], bool]:
        """The guards' verdict on what these writes would remove (``_withheld``)."""
        proposal = await self._listing_proposal(name, adapter, desired, writes)
        if proposal is None:
            self.f.guard.leave(name)
            return await self.f.withheld(name, NOTHING, whole=False)
        return await self.f.withheld(name, await self.f.guard.judge(name, proposal),
                                     whole=False)

    async def _by_bulk(self, target: RentixTarget, writes: list[ListingWrite]) -> set[str]:
        """The writes that go by bulk (through the outbox): all of them when more are waiting
        than single PUTs would send within ``bulk_after_s`` (the outbox, these writes, and
        the PUTs the shared rate limit has already let through); else only those whose
        listing waits in the outbox already, so a PUT never overtakes an older bulk write."""
        refs = [write.ref for write in writes]
        waiting = await self.f.d.outbox.waiting(target.name, refs)
        if not writes or target.bulk_per_minute <= 0:
            return waiting
        backlog_ms = await self.f.d.limiter.backlog_ms(target.name, now_ms())
        booked = backlog_ms * target.requests_per_minute // 60_000
        depth = await self.f.d.outbox.depth(target.name)
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
            self.f.trace.turn_to(name, write.ref)
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
                    await self.f.trace.adoption(name, write.ref)
                    continue
            if not turn.verified and write.ref not in turn.accepted and write.new_intent:
                wait = await self.f.rate_slot(name, turn.target.requests_per_minute)
                if wait:
                    return wait
                held = await self._already_held(adapter, write, turn.stamps[write.ref])
                if isinstance(held, Result):
                    return await self.f.setback(name, held)
                if held:
                    continue
            if not inline:
                turn.queued.append(write)
                continue
            if turn.bulk_on:
                # The turn's PUTs wait MAX_INLINE_WAIT_MS in all, then the rest go by bulk:
                # ten groups' first flushes each waiting out 20 PUTs one slot at a time held
                # their leases (and Travtus) for ~35 s at a cold start (measured, issue 30).
                waited = await self.f.slot_within(name, turn.target.requests_per_minute,
                                                  turn.burst, MAX_INLINE_WAIT_MS - turn.waited_ms)
                if waited is None:
                    turn.by_bulk.update(w.ref for w in writes)
                    turn.queued.append(write)
                    continue
                turn.waited_ms += waited
            elif wait := await self.f.rate_slot(name, turn.target.requests_per_minute):
                return wait
            if write.new_intent:
                await self.f.ledger.intend(name, {write.ref: write.intent})
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
            await self.f.ledger.block_until(turn.target.name, reset, "rate-limit window spent")
            return await self.f.trace.rate_limited(turn.target.name, reset)
        return None

    async def _enqueue(self, turn: ListingTurn) -> None:
        """Put the turn's queued writes in the target's outbox with their intents: one write,
        fenced."""
        name, writes = turn.target.name, turn.queued
        if not writes:
            return
        now = now_ms()
        fresh = {write.ref: write.intent for write in writes if write.new_intent}
        entries = [Queued.of(w, self.f.group, now, turn.stamps[w.ref]) for w in writes]
        places = {w.ref: place(w, now) for w in writes}
        await self.f.ledger.apply([*intend_writes(name, fresh),
                                   *outbox.put_writes(name, entries, now, places)])
        await self.f.trace.queued(name, writes)

    async def _already_held(self, adapter: RentixAdapter, write: ListingWrite, planned: Stamp
                            ) -> bool | Result:
        """Does the portal hold this write's content already? Then the ledger learns it and
        nothing is sent. The failed read's result when the portal could not be read."""
        self.f.lease.ensure()
        found = await adapter.get_by_external_id(write.ref)
        self.f.lease.ensure()
        if found.outcome is Outcome.NOT_FOUND:
            if write.operation == "upsert":
                return False
        elif not found.ok or not isinstance(found.body, dict):
            return found
        elif adapter.held_by_portal(write.payload, found.body):
            return False
        # Held as desired, or nothing there to hide or delete.
        await self.f.ledger.record_accepted(adapter.name, write.ref,
                                            Accepted(write.digest, write.payload, now_ms()),
                                            planned)
        return True

    async def _settle_listing(self, name: str, write: ListingWrite, result: Result,
                              turn: ListingTurn) -> int | bool | None:
        """Record one write's outcome; False to go on with the next write, else when the
        group is due again (None: not for this target)."""
        try:
            await self.f.record(name, write.operation, [write.ref], write.key, result,
                                turn.attempts + 1,
                                [now_ms() - write.received_ms] if result.ok else [],
                                seen=self._budget_seen)
            if result.ok:
                await self.f.ledger.record_accepted(
                    name, write.ref, Accepted(write.digest, write.payload, now_ms()),
                    turn.stamps[write.ref], write.key)
                return False
        except LeaseLost:
            if result.ok:
                await self.f.after_lost_write(name, write.ref, write.digest)
            raise
        if result.outcome in REFUSED:
            await self.f.quarantine(name, [Invalid(write.ref, problem(result), write.digest)])
            return False
        return await self.f.setback(name, result)

    async def _adoption_gate(self, target: RentixTarget, adapter: RentixAdapter,
                             ref: str) -> Gate:
        """In adoption, a write for a ref this target never accepted creates a listing beside
        the hand-made one, unless Rentix already holds the ref: look it up once, then send
        (linked) or hold it until the ref is linked or adoption ends."""
        adoption = self.f.adoption
        if await adoption.is_linked(target.name, ref):
            return Gate()
        if await adoption.is_held(target.name, ref):
            return Gate(hold=True)
        wait = await self.f.rate_slot(target.name, target.requests_per_minute)
        if wait:
            return Gate(stop=True, next_due=wait)
        self.f.lease.ensure()
        found = await adapter.get_by_external_id(ref)
        self.f.lease.ensure()
        if found.ok:
            await adoption.mark_linked(target.name, [ref])
            return Gate()
        if found.outcome is Outcome.NOT_FOUND:
            await adoption.hold(target.name, ref, self.f.group, now_ms())
            return Gate(hold=True)
        return Gate(stop=True, next_due=await self.f.setback(target.name, found))

    async def _send_listing(self, adapter: RentixAdapter, write: ListingWrite) -> Result:
        await self.f.trace.sent(adapter.name, write)
        self.f.lease.ensure()
        if write.operation == "delete":
            return await adapter.delete(write.ref, write.key)
        return await adapter.upsert(write.payload, write.key)

    async def _listing_proposal(self, name: str, adapter: RentixAdapter,
                                desired: list[DesiredListing], writes: list[ListingWrite]
                                ) -> Proposal | None:
        """What a per-listing turn's writes would remove from the group, and the group's
        size on the portal (members it holds, not already taken down); None: nothing."""
        members = {listing.ref: listing for listing in desired}
        holds = await self.f.ledger.accepted(name, None, self.f.claim.members)
        removing = [w for w in writes if removes(w, members[w.ref], w.ref in holds)]
        if not removing:
            return None
        gone = {w.ref for w in removing}
        present = {ref for ref, record in holds.items()
                   if record.digest != desired_digest(adapter, bare_tombstone(ref, self.f.group))}
        # Creates the sender took ahead of this flush (ahead.py) are this change's creates,
        # landed or not: the group the deletions are measured against is the one before it.
        early = present & early_creates(
            await self.f.d.redis.hgetall(ahead_key(name, self.f.group)))  # type: ignore[misc]
        present -= early
        creates = sum(1 for w in writes if w.ref not in holds and w.ref not in gone) \
            + len(early - gone)
        deletions = [deletion_cause(w.ref, self.f.group, members[w.ref], None) for w in removing]
        return Proposal(deletions, len(present - gone) + creates, len(present))

    def _budget_seen(self, at: int) -> list[Write]:
        """The portal's general budget as its last answer's X-RateLimit-* headers said (a
        single write: PUT, hide, delete; bulks record theirs in the sender)."""
        general = budget.from_headers(self.adapter.rate_limit, at)
        return noted(budget.command(self.target.name, {"general": general}))


def _exhausted(adapter: RentixAdapter) -> int | None:
    info = adapter.rate_limit
    if info.remaining == 0 and info.reset and info.reset * 1000 > now_ms():
        return int(info.reset * 1000)
    return None
