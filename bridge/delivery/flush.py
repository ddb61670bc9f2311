"""One group's flush: claim its changes, then bring every target up to date, independently.

Each target's outcome decides what happens next: accepted content is recorded (so it is never
sent again), refused content is quarantined for that target alone, transient failures back off
without holding a worker slot (the group is simply due again later), rate limits and invalid
credentials hold the whole target, and destructive syncs are held for an operator.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from bridge.clock import now_ms
from bridge.delivery.adoption import Adoption
from bridge.delivery.claims import Claim, Flushes
from bridge.delivery.ledger import Accepted, Attempt, Held, Ledger, Quarantined
from bridge.delivery.planning import (
    Invalid,
    ListingWrite,
    SyncPlan,
    guard_reason,
    plan_listings,
    plan_sync,
)
from bridge.delivery.ratelimit import RateLimiter
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
GROUP = "(group):"


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
    def __init__(self, redis: Redis, settings: Settings,
                 adapters: dict[str, RentixAdapter | TravtusAdapter]) -> None:
        self.settings = settings
        self.adapters = adapters
        self.ledger = Ledger(redis)
        self.limiter = RateLimiter(redis)
        self.flushes = Flushes(redis, lease_ms=(settings.delivery.job_timeout_s + 5) * 1000)
        self.adoption = Adoption(redis)

    async def flush(self, group: str) -> str:
        claim = await self.flushes.claim(group, now_ms())
        # Stop starting new calls well before the job timeout; the rest goes in the next turn.
        deadline = time.monotonic() + self.settings.delivery.job_timeout_s * 0.6
        turns = [self._target_turn(t, claim, deadline) for t in self.settings.targets]
        results = await asyncio.gather(*turns, return_exceptions=True)
        next_due: int | None = None
        for target, result in zip(self.settings.targets, results, strict=True):
            if isinstance(result, BaseException):
                log.exception("flush of %s for %s failed", group, target.name, exc_info=result)
                result = await self._backoff(target.name, group, f"bridge error: {result!r}")
            next_due = earliest(next_due, result)
        clean = await self.flushes.finish(claim, next_due)
        return f"{group}: {'done' if clean and next_due is None else 'more to do'}"

    async def _target_turn(self, target: RentixTarget | TravtusTarget, claim: Claim,
                           deadline: float) -> int | None:
        state = await self.ledger.target_state(target.name)
        if state.get("paused"):
            return None  # changes accumulate; resuming makes every group due
        blocked = int(state.get("blocked_until") or 0)
        if blocked > now_ms():
            return blocked
        _, not_before = await self.ledger.backoff(target.name, claim.group)
        if not_before > now_ms():
            return not_before
        adapter = self.adapters[target.name]
        if isinstance(adapter, RentixAdapter):
            assert isinstance(target, RentixTarget)
            return await self._per_listing(target, adapter, claim, deadline)
        assert isinstance(target, TravtusTarget)
        return await self._group_sync(target, adapter, claim)

    # -- per-listing portals (Rentix) --

    async def _per_listing(self, target: RentixTarget, adapter: RentixAdapter, claim: Claim,
                           deadline: float) -> int | None:
        refs = [listing.ref for listing in claim.listings]
        accepted = await self.ledger.accepted(target.name, None, refs)
        quarantined = await self.ledger.quarantined(target.name, refs)
        retries = await self.ledger.retries(target.name, refs)
        plan = plan_listings(target.name, adapter, claim.listings, accepted, quarantined,
                             retries)
        await self._quarantine(target.name, claim.group, plan.invalid)
        attempts, _ = await self.ledger.backoff(target.name, claim.group)
        adopting = await self.adoption.active(target)
        for write in plan.writes:
            if time.monotonic() > deadline:
                return now_ms()
            if (reset := _exhausted(adapter)) is not None:
                # The portal says its window is spent: every worker waits for the reset.
                await self.ledger.block_until(target.name, reset, "rate-limit window spent")
                return reset
            if adopting and write.ref not in accepted:
                gate = await self._adoption_gate(target, adapter, claim.group, write.ref)
                if gate.stop:
                    return gate.next_due
                if gate.hold:
                    continue
            wait = await self._rate_slot(target.name, target.requests_per_minute)
            if wait:
                return wait
            result = await self._send_listing(adapter, write)
            await self._record(target.name, claim.group, write.operation, [write.ref],
                               write.key, result, attempts + 1,
                               [now_ms() - write.received_ms] if result.ok else [])
            if result.ok:
                await self.ledger.record_accepted(
                    target.name, write.ref, Accepted(write.digest, write.payload, now_ms()))
                await self.ledger.release_quarantine(target.name, [write.ref])
                continue
            if result.outcome in (Outcome.DATA_INVALID, Outcome.CONFLICT, Outcome.NOT_FOUND):
                problem = Invalid(write.ref, _problem(result), write.digest)
                await self._quarantine(target.name, claim.group, [problem])
                continue
            return await self._setback(target.name, claim.group, result)
        if attempts:
            await self.ledger.clear_backoff(target.name, claim.group)
        return None

    async def _adoption_gate(self, target: RentixTarget, adapter: RentixAdapter, group: str,
                             ref: str) -> Gate:
        """In adoption, a write for a ref this target never accepted creates a listing beside
        the hand-made one, unless Rentix already holds the ref: look it up once, then send
        (linked) or hold it until the ref is linked or adoption ends."""
        if await self.adoption.is_linked(target.name, ref):
            return Gate()
        if await self.adoption.is_held(target.name, ref):
            return Gate(hold=True)
        wait = await self._rate_slot(target.name, target.requests_per_minute)
        if wait:
            return Gate(stop=True, next_due=wait)
        found = await adapter.get_by_external_id(ref)
        if found.ok:
            await self.adoption.mark_linked(target.name, [ref])
            return Gate()
        if found.outcome is Outcome.NOT_FOUND:
            await self.adoption.hold(target.name, ref, group, now_ms())
            return Gate(hold=True)
        return Gate(stop=True, next_due=await self._setback(target.name, group, found))

    async def _send_listing(self, adapter: RentixAdapter, write: ListingWrite) -> Result:
        if write.operation == "delete":
            return await adapter.delete(write.ref, write.key)
        return await adapter.upsert(write.payload, write.key)

    # -- group-sync portals (Travtus) --

    async def _group_sync(self, target: TravtusTarget, adapter: TravtusAdapter,
                          claim: Claim) -> int | None:
        name, group = target.name, claim.group
        accepted = await self.ledger.accepted(name, group)
        refs = [listing.ref for listing in claim.listings]
        quarantined = await self.ledger.quarantined(name, [*refs, GROUP + group])
        last = await self.ledger.sync_digest(name, group)
        retry = (await self.ledger.retries(name, [GROUP + group])).get(GROUP + group, 0)
        plan = plan_sync(name, adapter, group, claim.listings, accepted, quarantined, last,
                         now_ms(), retry)
        await self._quarantine(name, group, plan.invalid)
        if plan.unchanged or _quarantined_sync(plan, quarantined.get(GROUP + group)):
            return None
        if await self.ledger.discarded_digest(name, group) == plan.digest:
            return None
        if last is None and not plan.listings and not accepted:
            return None  # nothing to say about a group we have never synced
        if await self.ledger.released_digest(name, group) != plan.digest:
            try:
                held = await self._guard(target, adapter, plan, accepted, set(refs), last)
            except PortalError as exc:
                return await self._setback(name, group, exc.result)
            if held:
                await self.ledger.hold(name, group, held)
                log.warning("holding %s sync of %s: %s", name, group, held.reason)
                return None
        await self.ledger.unhold(name, group)
        wait = await self._rate_slot(name, target.requests_per_minute)
        if wait:
            return wait
        attempts, _ = await self.ledger.backoff(name, group)
        result = await adapter.sync(group, plan.listings, plan.key)
        latencies = [now_ms() - plan.received_ms[r] for r in plan.fresh] if result.ok else []
        await self._record(name, group, "sync", plan.refs, plan.key, result, attempts + 1,
                           latencies)
        if result.ok:
            await self.ledger.record_sync(name, group, plan.digest, plan.records)
            await self.ledger.release_quarantine(name, [*plan.fresh, GROUP + group])
            if attempts:
                await self.ledger.clear_backoff(name, group)
            return None
        return await self._sync_refused(name, plan, result)

    async def _guard(self, target: TravtusTarget, adapter: TravtusAdapter, plan: SyncPlan,
                     accepted: dict[str, Accepted], known: set[str],
                     last: str | None) -> Held | None:
        reason = guard_reason(plan, len(accepted), self.settings.guard)
        deletions = plan.deletions
        unknown: list[str] = []
        if reason is None and last is None:
            # First sync: whatever the portal holds that the bridge never heard of would go.
            on_portal = await adapter.find_all(plan.group)
            unknown = sorted({str(item.get("external_ref")) for item in on_portal}
                             - known - set(plan.records))
            if unknown:
                reason = (f"first sync of the group, and the portal holds {len(unknown)} "
                          "listing(s) the bridge has never heard of; the sync would delete them")
                deletions = sorted(set(deletions) | set(unknown))
        if reason is None:
            return None
        return Held(plan.digest, reason, deletions, len(plan.listings), now_ms(), unknown)

    async def _sync_refused(self, name: str, plan: SyncPlan, result: Result) -> int | None:
        if result.outcome in (Outcome.DATA_INVALID, Outcome.CONFLICT, Outcome.NOT_FOUND):
            ref = result.listing_ref
            if ref and ref in plan.records:
                # Quarantine that listing and try again at once without it.
                invalid = Invalid(ref, _problem(result), plan.records[ref].digest)
                await self._quarantine(name, plan.group, [invalid])
                return now_ms()
            invalid = Invalid(GROUP + plan.group, _problem(result), plan.digest)
            await self._quarantine(name, plan.group, [invalid])
            return None
        if result.outcome is Outcome.CREDENTIALS_INVALID and result.error_type == \
                "no_access_to_group":
            held = Held(plan.digest, f"the portal refuses access to this group: {result.message}",
                        [], len(plan.listings), now_ms())
            await self.ledger.hold(name, plan.group, held)
            return None
        return await self._setback(name, plan.group, result)

    # -- shared --

    async def _rate_slot(self, target: str, per_minute: int) -> int | None:
        """Wait briefly for the shared rate limit, or return when to come back."""
        while True:
            wait = await self.limiter.acquire(target, per_minute, now_ms())
            if not wait:
                return None
            if wait > MAX_INLINE_WAIT_MS:
                return now_ms() + wait
            await asyncio.sleep(wait / 1000)

    async def _setback(self, target: str, group: str, result: Result) -> int | None:
        reason = f"{result.outcome}: {result.error_type or result.status or ''} {result.message}"
        if result.outcome is Outcome.CREDENTIALS_INVALID:
            await self.ledger.pause(target, reason.strip())
            log.error("pausing %s: %s", target, reason)
            return None
        if result.outcome is Outcome.RATE_LIMITED:
            until = int(result.retry_at * 1000) if result.retry_at else None
            if until is None or until <= now_ms():
                return await self._backoff(target, group, reason)
            await self.ledger.block_until(target, until, reason.strip())
            return until
        return await self._backoff(target, group, reason)

    async def _backoff(self, target: str, group: str, reason: str) -> int:
        """Exponential backoff with full jitter; the group is simply due again then."""
        attempts, _ = await self.ledger.backoff(target, group)
        delivery = self.settings.delivery
        ceiling = min(delivery.retry_max_s, delivery.retry_base_s * 2 ** attempts)
        not_before = now_ms() + int(1000 * random.uniform(ceiling / 2, ceiling))
        await self.ledger.set_backoff(target, group, attempts + 1, not_before)
        await self.ledger.note(target, last_error=reason.strip(), last_error_at=now_ms())
        return not_before

    async def _quarantine(self, target: str, group: str, invalid: list[Invalid]) -> None:
        for item in invalid:
            problem = item.problem
            await self.ledger.quarantine(target, item.ref, Quarantined(
                item.digest, group, problem.error_type, problem.message, problem.field, now_ms()))

    async def _record(self, target: str, group: str, operation: str, refs: list[str], key: str,
                      result: Result, attempt: int, latencies: list[int]) -> None:
        error = "" if result.ok else f"{result.error_type or ''} {result.message}".strip()
        entry = Attempt(now_ms(), target, group, operation, refs[:50], key, str(result.outcome),
                        result.status, round(result.latency_ms, 1), attempt, error)
        await self.ledger.record_attempt(entry, latencies)


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

