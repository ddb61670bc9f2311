"""Reconciling the portals with the CRM's state as the bridge holds it.

For each target and group: read what the portal holds (paced to ``[reconcile] read_share`` of
the target's rate budget, so deliveries never wait on it), compare (``compare.py``), and, when
asked to repair, do it as a flush does, under the group's fenced lease:

* listings the portal holds exactly as desired: the ledger is corrected to them (no write);
* missing, drift and stale listings: their record is put in doubt, so the flush that follows
  (run here, inline) sends the desired content with fresh Idempotency-Keys, hides or deletes
  what the CRM deleted, and the guards judge every deletion;
* unknown listings are reported and never touched (a group holding them is read by its next
  sync, which holds itself for an operator rather than delete them).

Read cost: a per-listing portal (Rentix) is read by pages of 100 for a whole-target pass (10
calls per 1,000 listings) or by external ID for one group (one call per listing); a group-sync
portal (Travtus) by group, one call per 100 listings of the group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from bridge import constants as k
from bridge.clock import now_ms
from bridge.delivery.claims import Claim, LeaseLost
from bridge.delivery.desired import DesiredListing, read_listings
from bridge.delivery.flush import Delivery, GroupFlush
from bridge.delivery.ledger import sync_scope
from bridge.delivery.planning import plan_sync
from bridge.delivery.ratelimit import read_pace
from bridge.portals import Outcome, PortalError, RentixAdapter, TravtusAdapter
from bridge.reconcile.compare import (
    KINDS,
    Finding,
    GroupCheck,
    Kind,
    compare_group,
    compare_listings,
    unknown_items,
)
from bridge.settings import RentixTarget, Settings, TravtusTarget

log = logging.getLogger("bridge.reconcile")

# How long a repair waits for a running flush of its group to finish.
CLAIM_PATIENCE_S = 30.0


@dataclass
class Report:
    """Everything one reconciliation found, and what it repaired."""

    findings: list[Finding] = field(default_factory=list)
    repaired: list[Finding] = field(default_factory=list)
    groups: int = 0
    reads: dict[str, int] = field(default_factory=dict)  # target -> portal read calls
    skipped: list[str] = field(default_factory=list)  # "target/group: why"

    def totals(self) -> dict[str, int]:
        return {kind: sum(1 for f in self.findings if f.kind == kind) for kind in KINDS}

    def repaired_totals(self) -> dict[str, int]:
        return {kind: sum(1 for f in self.repaired if f.kind == kind) for kind in KINDS}


class Reconciler:
    def __init__(self, redis: Redis, settings: Settings,
                 adapters: dict[str, RentixAdapter | TravtusAdapter],
                 delivery: Delivery | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.adapters = adapters
        # A worker passes its own: one witness of the fencing tokens per process.
        self.delivery = delivery or Delivery(redis, settings, adapters)

    # -- what there is to reconcile --

    async def groups(self) -> list[str]:
        return sorted(_text(g) for g in await self.redis.smembers(k.GROUPS))  # type: ignore[misc]

    def targets(self, name: str | None = None) -> list[RentixTarget | TravtusTarget]:
        if name is None:
            return list(self.settings.targets)
        return [self.settings.target(name)]

    # -- the whole run (``bridge reconcile``) --

    async def run(self, target: str | None = None, group: str | None = None,
                  repair: Collection[Kind] = (),
                  progress: Callable[[str, str], None] | None = None) -> Report:
        """Compare every group (or ``group``) on every target (or ``target``); repair the
        findings of the kinds in ``repair`` (never "unknown")."""
        report = Report()
        groups = [group] if group is not None else await self.groups()
        for spec in self.targets(target):
            counter = _Counter(self._pace(spec))
            items = None
            if isinstance(spec, RentixTarget) and group is None:
                items = await self._agency(spec, counter, report)
            for name in groups:
                check = await self.check(spec, name, counter, items)
                report.findings += check.findings
                report.groups += 1
                if repair and await self._needs_repair(spec, check, repair):
                    await self._repair(spec, check, repair, report)
                if progress is not None:
                    progress(spec.name, name)
            report.reads[spec.name] = counter.calls
        return report

    async def _agency(self, spec: RentixTarget, counter: _Counter, report: Report
                      ) -> dict[str, dict[str, Any]]:
        """Every listing of a per-listing portal, by external ID, read once by pages; those no
        CRM listing the bridge knows is linked to are reported as unknown."""
        adapter = self.adapters[spec.name]
        assert isinstance(adapter, RentixAdapter)
        items = [item async for item in adapter.iter_listings(pace=counter.pace)]
        refs = [ref for item in items if (ref := adapter.portal_ref(item))]
        known = await self._known(refs)
        report.findings += unknown_items(spec.name, adapter, items, known)
        return {ref: item for item in items if (ref := adapter.portal_ref(item))}

    # -- one group on one target (also the periodic pass) --

    async def check(self, spec: RentixTarget | TravtusTarget, group: str,
                    counter: _Counter | None = None,
                    items: dict[str, dict[str, Any]] | None = None) -> GroupCheck:
        """Read what the portal holds for ``group`` and compare it with the desired state."""
        counter = counter or _Counter(self._pace(spec))
        members = await self._members(group)
        skip = await self._not_sent_on_purpose(spec, members)
        adapter = self.adapters[spec.name]
        if isinstance(adapter, RentixAdapter):
            if items is None:
                items = await self._by_external_id(adapter, members, counter)
            held = {m.ref: items.get(m.ref) for m in members}
            return compare_listings(spec.name, group, adapter, members, held, skip, now_ms())
        found = await adapter.find_all(group, pace=counter.pace)
        refs = {ref for item in found if (ref := adapter.portal_ref(item))}
        elsewhere = await read_listings(self.redis, sorted(refs - {m.ref for m in members}))
        return compare_group(spec.name, group, adapter, members, found, elsewhere, skip,
                             now_ms())

    async def check_and_repair(self, spec: RentixTarget | TravtusTarget, group: str,
                               repair: Collection[Kind]) -> tuple[GroupCheck, list[Finding]]:
        """The periodic pass's unit: one group on one target, repairing ``repair`` kinds."""
        check = await self.check(spec, group)
        report = Report()
        if await self._needs_repair(spec, check, repair):
            await self._repair(spec, check, repair, report)
        return check, report.repaired

    async def check_portal(self, spec: RentixTarget) -> GroupCheck:
        """The periodic pass's check of a per-listing portal as a whole (group ""): every
        listing read by pages; those no CRM listing the bridge knows is linked to, unknown."""
        report = Report()
        await self._agency(spec, _Counter(self._pace(spec)), report)
        return GroupCheck(spec.name, "", findings=report.findings)

    async def _needs_repair(self, spec: RentixTarget | TravtusTarget, check: GroupCheck,
                            repair: Collection[Kind]) -> bool:
        """Something to send again, or a ledger that does not say what the portal holds."""
        if any(f.kind in repair and f.kind != "unknown" for f in check.findings):
            return True
        ledger = self.delivery.ledger
        if isinstance(spec, RentixTarget):
            accepted = await ledger.accepted(spec.name, None, list(check.in_step))
        else:
            accepted = await ledger.accepted(spec.name, check.group)
        return any(ref not in accepted or accepted[ref].digest != held.digest
                   for ref, held in check.in_step.items())

    async def _by_external_id(self, adapter: RentixAdapter, members: list[DesiredListing],
                              counter: _Counter) -> dict[str, dict[str, Any]]:
        items: dict[str, dict[str, Any]] = {}
        for listing in members:
            result = await adapter.get_by_external_id(listing.ref, pace=counter.pace)
            if result.ok and isinstance(result.body, dict):
                items[listing.ref] = result.body
            elif result.outcome is not Outcome.NOT_FOUND:
                raise PortalError(result)
        return items

    # -- repairs, under the group's lease --

    async def _repair(self, spec: RentixTarget | TravtusTarget, check: GroupCheck,
                      repair: Collection[Kind], report: Report) -> None:
        kinds = set(repair) - {"unknown"}
        fix = [f for f in check.findings if f.kind in kinds]
        # The repair plans the whole group: what the ledger said was settled is in doubt.
        await self.redis.delete(f"{k.SETTLED}{check.group}")
        claim = await self._claim(check.group)
        if claim is None:
            report.skipped.append(f"{spec.name}/{check.group}: a flush held it throughout")
            return
        try:
            async with self.delivery.flushes.leased(claim) as lease:
                flush = GroupFlush(self.delivery, claim, lease)
                await self._correct(flush, spec, check, fix)
                await flush.run()
        except LeaseLost as exc:
            report.skipped.append(f"{spec.name}/{check.group}: {exc}")
            return
        report.repaired += fix

    async def _correct(self, flush: GroupFlush, spec: RentixTarget | TravtusTarget,
                       check: GroupCheck, fix: list[Finding]) -> None:
        """The ledger as the portal confirms it; what must be written again, in doubt."""
        ledger = flush.ledger
        adapter = self.adapters[spec.name]
        if isinstance(adapter, RentixAdapter):
            accepted = await ledger.accepted(spec.name, None, list(check.in_step))
            for ref, held in check.in_step.items():
                if ref not in accepted or accepted[ref].digest != held.digest:
                    await ledger.record_accepted(spec.name, ref, held)
            for finding in fix:
                await ledger.distrust(spec.name, finding.ref)
            return
        if any(f.kind == "unknown" for f in check.findings):
            # The next sync must read the portal, see them, and hold rather than delete them.
            await ledger.unverify(spec.name, check.group)
        if fix:
            await ledger.distrust(spec.name, sync_scope(check.group))
            return
        if not check.findings:
            # The portal holds the group exactly as desired: record that, send nothing.
            members = flush.claim.listings
            accepted = await ledger.accepted(spec.name, check.group)
            plan = plan_sync(adapter, check.group, members, accepted, {}, None, now_ms())
            if set(plan.records) == set(check.in_step) and (
                    await ledger.sync_digest(spec.name, check.group) != plan.digest):
                await ledger.record_sync(spec.name, check.group, plan.digest, check.in_step,
                                         [], await self.delivery.witness.epoch())

    async def _claim(self, group: str) -> Claim | None:
        waited = 0.0
        while True:
            claim = await self.delivery.flushes.claim(group, now_ms())
            if claim is not None or waited >= CLAIM_PATIENCE_S:
                return claim
            await asyncio.sleep(0.2)
            waited += 0.2

    # -- reading the desired state --

    async def _members(self, group: str) -> list[DesiredListing]:
        refs = sorted(_text(r) for r in await self.redis.smembers(f"{k.MEMBERS}{group}"))  # type: ignore[misc]
        found = await read_listings(self.redis, refs)
        return [found[ref] for ref in refs if ref in found]

    async def _known(self, refs: list[str]) -> set[str]:
        if not refs:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.exists(f"{k.LISTING}{ref}")
            found = await pipe.execute()
        return {ref for ref, there in zip(refs, found, strict=True) if there}

    async def _not_sent_on_purpose(self, spec: RentixTarget | TravtusTarget,
                                   members: list[DesiredListing]) -> set[str]:
        """Refs quarantined (the portal keeps an older version), held in adoption, or waiting
        in the outbox for a bulk (on their way: not drift)."""
        refs = [m.ref for m in members]
        quarantined = await self.delivery.ledger.quarantined(spec.name, refs)
        skip = set(quarantined)
        if isinstance(spec, RentixTarget):
            skip |= await self.delivery.outbox.waiting(spec.name, refs)
            if await self.delivery.adoption.active(spec):
                skip |= {h.ref for h in await self.delivery.adoption.held(spec.name)}
        return skip

    def _pace(self, spec: RentixTarget | TravtusTarget) -> Callable[[], Any]:
        return read_pace(self.delivery.limiter, spec.name, spec.requests_per_minute,
                         self.settings.reconcile.read_share)


class _Counter:
    """A pace that also counts the portal calls it let through."""

    def __init__(self, pace: Callable[[], Any]) -> None:
        self._pace = pace
        self.calls = 0

    async def pace(self) -> None:
        await self._pace()
        self.calls += 1


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
