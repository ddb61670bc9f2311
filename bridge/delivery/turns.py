"""The ground a flush's target turns share, whatever the portal's mode: the worker's
:class:`Services`, the :class:`FlushScope` of one flush (its claim, lease, fenced ledger, trace
and guards, and what every mode does alike: the guards' verdict, backoff, quarantine, recording
a call), and :class:`TargetFlow`, what each mode implements (``per_listing.py``,
``group_sync.py``). ``flush.py`` drives the turns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from redis.asyncio import Redis

from bridge.clock import now_ms
from bridge.delivery.adoption import Adoption
from bridge.delivery.claims import (
    Claim,
    Flushes,
    Lease,
    Write,
    mark_due,
)
from bridge.delivery.desired import DesiredListing, bare_tombstone, read_listings
from bridge.delivery.guard import GroupGuard, Verdict
from bridge.delivery.ledger import (
    Attempt,
    Ledger,
    Quarantined,
    attempt_writes,
    sync_scope,
)
from bridge.delivery.outbox import Outbox
from bridge.delivery.planning import (
    Invalid,
)
from bridge.delivery.ratelimit import RateLimiter
from bridge.delivery.repack import Repacker
from bridge.delivery.sender import Sender
from bridge.delivery.tombstones import Tombstones
from bridge.delivery.trace import FlushTrace
from bridge.delivery.witness import Witness
from bridge.logs import about
from bridge.portals import (
    Outcome,
    Problem,
    RentixAdapter,
    Result,
    TravtusAdapter,
)
from bridge.settings import Settings

log = logging.getLogger("bridge.delivery.flush")

# A wait for the shared rate limit shorter than this happens in the job; longer ones end the
# target's turn and make the group due again then.
MAX_INLINE_WAIT_MS = 2_000
REFUSED = (Outcome.DATA_INVALID, Outcome.CONFLICT, Outcome.NOT_FOUND)


def earliest(*times: int | None) -> int | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


class TargetFlow(Protocol):
    """One target's part in one flush, as its portal's mode delivers it."""

    async def turn(self, deadline: float) -> int | None:
        """Bring the target up to date with the claim; when the group is due again for it
        (None: not for this target)."""

    async def done_with(self, deleted: list[DesiredListing]) -> set[str]:
        """Which of these deleted listings the target holds no more (or never held)."""


class Services:
    """What a worker needs to flush groups, built once (:class:`~bridge.delivery.flush.Delivery`
    adds the flush itself)."""

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
        rentix = {name: a for name, a in adapters.items() if a.mode == "per_listing"}
        self.sender = Sender(redis, settings.delivery, rentix, self.ledger, self.limiter,
                             settings.debounce.window_ms, self.witness)
        # target -> the token expiry this process last recorded (Travtus): written once per
        # token fetched, not with every sync.
        self.token_expiry_recorded: dict[str, int] = {}


class FlushScope:
    """One flush of one group under one lease: what its target turns share."""

    def __init__(self, delivery: Services, claim: Claim, lease: Lease) -> None:
        self.d = delivery
        self.settings = delivery.settings
        self.claim = claim
        self.lease = lease
        self.ledger = delivery.ledger.fenced(lease)
        self.adoption = delivery.adoption.fenced(lease)
        self.trace = FlushTrace(self.ledger, claim)  # each listing's story: bridge trace
        # Targets whose turn settled every change the claim holds (lb:settled).
        self.settled: set[str] = set()
        self.guard = GroupGuard(claim.group, [t.name for t in self.settings.targets],
                                self.settings.guard)
        # When the flush stops starting calls (monotonic s), well inside the job's timeout.
        self.deadline = time.monotonic() + self.settings.delivery.job_timeout_s * 0.6

    epoch: str  # the witness's epoch, read as the flush starts

    @property
    def group(self) -> str:
        return self.claim.group

    async def every_member(self) -> list[DesiredListing]:
        """Every member's desired state: the claimed ones and the settled rest, read now."""
        rest = await self.listings_of(self.claim.others)
        return sorted([*self.claim.listings, *rest], key=lambda listing: listing.ref)

    async def listings_of(self, refs: list[str]) -> list[DesiredListing]:
        """The desired state of these members (a member without a hash reads as a bare
        tombstone, as in a claim)."""
        found = await read_listings(self.d.redis, refs)
        return [found.get(ref) or bare_tombstone(ref, self.group) for ref in refs]

    async def withheld(self, name: str, verdict: Verdict, whole: bool
                       ) -> tuple[set[str], bool]:
        """What the verdict means for this target: the refs whose deletion it keeps back
        (held for an operator, or discarded by one), and whether an operator released them.
        A held entry this target no longer holds goes. ``whole``: the held change stops the
        target's whole turn (a group sync), not only its deletions."""
        entry = await self.ledger.held_of(name, self.group)
        if not verdict.holds(name):
            if entry is None:
                return set(), False
            if entry.digest != verdict.digest or name not in verdict.targets:
                await self.ledger.unhold(name, self.group)  # the change itself changed
                return set(), False
            # The very deletions held: they stay held until an operator decides. The limits
            # may pass now only because the group grew since, with the change's own creates
            # (they flow while its deletions wait): no reason to delete what the CRM did not
            # ask to.
            verdict = dataclasses.replace(verdict, reason=entry.reason)
        if await self.ledger.released_digest(name, self.group) == verdict.digest:
            return set(), True
        if await self.discarded(name, verdict.digest):
            return verdict.refs, False
        if entry is None or (entry.digest, entry.reason) != (verdict.digest, verdict.reason):
            held = verdict.held()
            await self.ledger.hold(name, self.group, held)
            await self.trace.held(name, held, whole=whole)
            log.warning("holding the deletions of %s on %s: %s", self.group, name,
                        held.reason, extra=about(self.group, name))
        return verdict.refs, False

    async def discarded(self, name: str, digest: str) -> bool:
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

    async def after_lost_write(self, name: str, scope: str, digest: str) -> None:
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

    async def slot_within(self, target: str, per_minute: int, burst: int, patience_ms: int
                          ) -> int | None:
        """Wait up to ``patience_ms`` (and never past the flush's deadline) for a request to
        ``target``, counted: the ms waited, or None when it would take longer (nothing
        counted, nothing traced: the caller sends the write another way)."""
        waited = 0
        while wait := await self.d.limiter.acquire(target, per_minute, now_ms(), burst):
            if waited + wait > patience_ms or time.monotonic() + wait / 1000 > self.deadline:
                return None
            await asyncio.sleep(wait / 1000)
            waited += wait
        return waited

    async def rate_slot(self, target: str, per_minute: int) -> int | None:
        """Wait briefly for the shared rate limit, or return when to come back: never past
        the flush's deadline, which keeps a job inside its timeout however busy the budget
        (several waits in one turn used to add up past it, and arq killed the job)."""
        while True:
            wait = await self.d.limiter.acquire(target, per_minute, now_ms())
            if not wait:
                return None
            if wait > MAX_INLINE_WAIT_MS or time.monotonic() + wait / 1000 > self.deadline:
                return await self.trace.rate_limited(target, now_ms() + wait)
            await asyncio.sleep(wait / 1000)

    async def setback(self, target: str, result: Result) -> int | None:
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
                return await self.backoff(target, reason)
            await self.ledger.block_until(target, until, reason.strip())
            return await self.trace.rate_limited(target, until)
        return await self.backoff(target, reason)

    async def backoff(self, target: str, reason: str) -> int:
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

    async def quarantine(self, target: str, invalid: list[Invalid],
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

    async def record(self, target: str, operation: str, refs: list[str], key: str,
                     result: Result, attempt: int, latencies: list[int],
                     seen: Callable[[int], Sequence[Write]] = lambda at: ()) -> None:
        error = "" if result.ok else f"{result.error_type or ''} {result.message}".strip()
        entry = Attempt(now_ms(), target, self.group, operation, refs[:50], key,
                        str(result.outcome), result.status, round(result.latency_ms, 1),
                        attempt, error)
        # What the answers told about the target (``seen``, given the attempt's time) goes in
        # the same atomic write: no extra round trip per call.
        await self.ledger.apply([*attempt_writes(entry, latencies, self.ledger.trace_ttl_ms,
                                                 self.trace.call_refs(target, refs)),
                                 *seen(entry.at)])


def problem(result: Result) -> Problem:
    return Problem(result.error_type or str(result.outcome), result.message or "",
                   result.field, result.listing_ref)
