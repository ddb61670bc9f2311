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

from bridge.clock import now_ms
from bridge.delivery.claims import (
    Claim,
    Lease,
    LeaseLost,
)
from bridge.delivery.group_sync import GroupSyncFlow
from bridge.delivery.ledger import (
    counted_flush,
)
from bridge.delivery.per_listing import PerListingFlow
from bridge.delivery.results import FlushOutcome, FlushResult
from bridge.delivery.turns import FlushScope, Services, TargetFlow, earliest
from bridge.logs import about
from bridge.settings import RentixTarget, TravtusTarget

log = logging.getLogger("bridge.delivery.flush")


class Delivery(Services):
    """What a worker needs to flush groups: built once, one :class:`GroupFlush` per flush."""

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


class GroupFlush(FlushScope):
    """One flush of one group, every target in turn (each by its portal's mode), under one
    lease."""

    def __init__(self, delivery: Delivery, claim: Claim, lease: Lease) -> None:
        super().__init__(delivery, claim, lease)
        self.flows = {target.name: self._flow(target) for target in self.settings.targets}

    def _flow(self, target: RentixTarget | TravtusTarget) -> TargetFlow:
        adapter = self.d.adapters[target.name]
        if adapter.mode == "per_listing":
            assert target.mode == "per_listing"
            return PerListingFlow(self, target, adapter)
        assert target.mode == "group_sync"
        return GroupSyncFlow(self, target, adapter)

    @counted_flush
    async def run(self) -> FlushResult:
        self.epoch = await self.d.witness.epoch()
        # Stop starting new calls well before the job timeout; the rest goes in the next turn.
        deadline = self.deadline
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
                result = await self.backoff(target.name, f"bridge error: {result!r}")
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
            done &= await self.flows[target.name].done_with(deleted)
            if not done:
                return
        names = [t.name for t in self.settings.targets]
        per_listing = [t.name for t in self.settings.targets if t.mode == "per_listing"]
        compacted = await self.d.tombstones.compact(
            self.group, self.claim.token, now_ms(),
            [listing for listing in deleted if listing.ref in done], names, per_listing)
        if compacted < 0:
            raise LeaseLost(f"group {self.group!r} was claimed by another flush")

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
        return await self.flows[target.name].turn(deadline)
