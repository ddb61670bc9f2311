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

A repair is only called one once the portal, read back, holds the listing as desired: the flush
may send nothing (the target is paused or rate-limited, the guards hold the sync, an operator
discarded it, the content is quarantined), and each finding's outcome says which. What the
read-back still finds is what an immediate rerun finds (``GroupResult.remaining``).

Read cost: a per-listing portal (Rentix) is read by pages of 100 for a whole-target pass (10
calls per 1,000 listings) or by external ID for one group (one call per listing); a group-sync
portal (Travtus) by group, one call per 100 listings of the group. A read-back costs the same
again, for the repaired listings only on Rentix, for the whole group on Travtus.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.asyncio import Redis

from bridge import group_state
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery import (
    Claim,
    Delivery,
    DesiredListing,
    GroupFlush,
    LeaseLost,
    Quarantined,
    plan_sync,
    read_listings,
    read_pace,
    sync_scope,
)
from bridge.portals import Outcome, PortalError, RentixAdapter, TravtusAdapter
from bridge.reconcile.compare import (
    KINDS,
    UNREADABLE,
    Finding,
    GroupCheck,
    Kind,
    compare_group,
    compare_listings,
    unknown_items,
)
from bridge.reconcile.records import Records
from bridge.replies import text
from bridge.settings import RentixTarget, Settings, TravtusTarget

log = logging.getLogger("bridge.reconcile")

# How long a repair waits for a running flush of its group to finish.
CLAIM_PATIENCE_S = 30.0

# repaired: read back as desired; not repaired: tried, or could not be, and `why` says why;
# left alone: not a kind this run repairs; found: a dry run's finding.
Status = Literal["repaired", "not repaired", "left alone", "found"]
REPAIRED = "confirmed: read back from the portal as desired"
STILL_FOUND = "still found when the portal was read back after the repair"


@dataclass(frozen=True)
class ListingOutcome:
    status: Status
    why: str = ""


@dataclass
class GroupResult:
    """One group on one target: the first look, what became of each of its findings, and what
    the portal still differs by afterwards (what an immediate rerun finds)."""

    check: GroupCheck
    outcomes: dict[Finding, ListingOutcome]
    remaining: list[Finding]
    skipped: str | None = None  # why no repair was attempted, when one was due

    @property
    def repaired(self) -> list[Finding]:
        return [f for f, o in self.outcomes.items() if o.status == "repaired"]

    def not_repaired(self) -> dict[str, str]:
        """ref -> why, for the findings a repair was due for and did not make."""
        return {f.ref: o.why for f, o in self.outcomes.items() if o.status == "not repaired"}

    def settle(self, findings: Collection[Finding], status: Status, why: str) -> None:
        self.outcomes.update({f: ListingOutcome(status, why) for f in findings})


@dataclass
class Report:
    """Everything one reconciliation found, what became of each finding, and what remains."""

    results: list[GroupResult] = field(default_factory=list)
    groups: int = 0
    reads: dict[str, int] = field(default_factory=dict)  # target -> portal read calls

    @property
    def findings(self) -> list[Finding]:
        return [f for r in self.results for f in r.check.findings]

    @property
    def remaining(self) -> list[Finding]:
        return [f for r in self.results for f in r.remaining]

    @property
    def skipped(self) -> list[str]:
        return [f"{r.check.target}/{r.check.group}: {r.skipped}" for r in self.results
                if r.skipped]

    def outcomes(self) -> list[tuple[Finding, ListingOutcome]]:
        return [(f, r.outcomes[f]) for r in self.results for f in r.check.findings]

    def totals(self) -> dict[str, int]:
        return _totals(self.findings)

    def status_totals(self, status: Status) -> dict[str, int]:
        return _totals([f for f, o in self.outcomes() if o.status == status])

    def repaired_totals(self) -> dict[str, int]:
        return self.status_totals("repaired")

    def remaining_totals(self) -> dict[str, int]:
        return _totals(self.remaining)


def _totals(findings: list[Finding]) -> dict[str, int]:
    return {kind: sum(1 for f in findings if f.kind == kind) for kind in KINDS}


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
        return sorted(text(g) for g in await self.redis.smembers(ks().GROUPS))  # type: ignore[misc]

    def targets(self, name: str | None = None) -> list[RentixTarget | TravtusTarget]:
        if name is None:
            return list(self.settings.targets)
        return [self.settings.target(name)]

    # -- the whole run (``bridge reconcile``) --

    async def run(self, target: str | None = None, group: str | None = None,
                  repair: Collection[Kind] = (),
                  progress: Callable[[str, str], None] | None = None,
                  record: bool = True) -> Report:
        """Compare every group (or ``group``) on every target (or ``target``); repair the
        findings of the kinds in ``repair`` (never "unknown"). ``record``: each group's check
        becomes its last check, shown by the pages as the periodic pass's are."""
        report = Report()
        records = Records(self.redis) if record else None
        groups = [group] if group is not None else await self.groups()
        for spec in self.targets(target):
            counter = _Counter(self._pace(spec))
            items = None
            if spec.mode == "per_listing" and group is None:
                whole, items = await self._agency(spec, counter)
                await self._add(report, records, _untouched(whole, repair))
            for name in groups:
                check = await self.check(spec, name, counter, items)
                report.groups += 1
                await self._add(report, records, await self.settle(spec, check, repair, counter))
                if progress is not None:
                    progress(spec.name, name)
            report.reads[spec.name] = counter.calls
        return report

    @staticmethod
    async def _add(report: Report, records: Records | None, result: GroupResult) -> None:
        report.results.append(result)
        if records is not None:
            await records.record_manual(result.check, result.repaired, result.remaining,
                                        result.not_repaired())

    async def _agency(self, spec: RentixTarget, counter: _Counter
                      ) -> tuple[GroupCheck, dict[str, dict[str, Any]]]:
        """Every listing of a per-listing portal, by external ID, read once by pages; those no
        CRM listing the bridge knows is linked to are the check's (group "") unknown ones."""
        adapter = self.adapters[spec.name]
        assert adapter.mode == "per_listing"
        items = [item async for item in adapter.iter_listings(pace=counter.pace)]
        refs = [ref for item in items if (ref := adapter.portal_ref(item))]
        known = await self._known(refs)
        whole = GroupCheck(spec.name, "", findings=unknown_items(spec.name, adapter, items, known))
        return whole, {ref: item for item in items if (ref := adapter.portal_ref(item))}

    # -- one group on one target (also the periodic pass) --

    async def check(self, spec: RentixTarget | TravtusTarget, group: str,
                    counter: _Counter | None = None,
                    items: dict[str, dict[str, Any]] | None = None,
                    only: Collection[str] | None = None) -> GroupCheck:
        """Read what the portal holds for ``group`` and compare it with the desired state;
        ``only``: these members alone on a per-listing portal (a group sync is read whole)."""
        counter = counter or _Counter(self._pace(spec))
        members = await self._members(group)
        adapter = self.adapters[spec.name]
        if only is not None and adapter.mode == "per_listing":
            members = [m for m in members if m.ref in only]
        skip = await self._not_sent_on_purpose(spec, members)
        if adapter.mode == "per_listing":
            if items is None:
                items = await self._by_external_id(adapter, members, counter)
            held = {m.ref: items.get(m.ref) for m in members}
            check = compare_listings(spec.name, group, adapter, members, held, skip, now_ms())
        else:
            found = await adapter.find_all(group, pace=counter.pace)
            refs = {ref for item in found if (ref := adapter.portal_ref(item))}
            elsewhere = await read_listings(self.redis,
                                            sorted(refs - {m.ref for m in members}))
            check = compare_group(spec.name, group, adapter, members, found, elsewhere, skip,
                                  now_ms())
        check.left_out = skip
        return check

    async def check_and_repair(self, spec: RentixTarget | TravtusTarget, group: str,
                               repair: Collection[Kind]) -> tuple[GroupCheck, list[Finding]]:
        """The periodic pass's unit: one group on one target, repairing ``repair`` kinds; the
        repairs the portal, read back, confirms."""
        check = await self.check(spec, group)
        return check, (await self.settle(spec, check, repair)).repaired

    async def check_portal(self, spec: RentixTarget) -> GroupCheck:
        """The periodic pass's check of a per-listing portal as a whole (group ""): every
        listing read by pages; those no CRM listing the bridge knows is linked to, unknown."""
        whole, _ = await self._agency(spec, _Counter(self._pace(spec)))
        return whole

    # -- repairs, and what became of them --

    async def settle(self, spec: RentixTarget | TravtusTarget, check: GroupCheck,
                     repair: Collection[Kind], counter: _Counter | None = None
                     ) -> GroupResult:
        """Repair ``check``'s findings of the kinds in ``repair`` and read the portal back:
        each finding's outcome, and what the portal still differs by."""
        result = _untouched(check, repair)
        fix = [f for f in check.findings if f.kind in _repairable(repair)]
        if not repair or not await self._needs_repair(spec, check, repair):
            return result
        result.skipped = await self._blocked(spec) or await self._repair(spec, check, fix)
        if result.skipped is not None:
            result.settle(fix, "not repaired", result.skipped)
        elif fix:
            await self._read_back(spec, result, fix, counter or _Counter(self._pace(spec)))
        return result

    async def _read_back(self, spec: RentixTarget | TravtusTarget, result: GroupResult,
                         fix: list[Finding], counter: _Counter) -> None:
        """Judge each repair by what the portal holds now, not by what was sent."""
        group, refs = result.check.group, {f.ref for f in fix}
        try:
            after = await self.check(spec, group, counter, only=refs)
        except PortalError as exc:
            result.settle(fix, "not repaired", f"reading the portal back failed ({exc}): "
                          "not confirmed")
            return
        still = {f.ref for f in after.findings}
        why_not = await self._why_not(spec, group, sorted(still & refs))
        for finding in fix:
            if finding.ref in still:
                result.settle([finding], "not repaired", why_not[finding.ref])
            elif finding.ref in after.left_out:
                result.settle([finding], "not repaired", after.left_out[finding.ref])
            else:
                result.settle([finding], "repaired", REPAIRED)
        if spec.mode == "per_listing":  # only the repaired listings were read back
            result.remaining = [f for f in result.check.findings if f.ref not in refs]
        else:
            result.remaining = []
        result.remaining += after.findings

    async def _blocked(self, spec: RentixTarget | TravtusTarget) -> str | None:
        """Why no flush would send anything to the target now."""
        state = await self.delivery.ledger.target_state(spec.name)
        if state.get("paused"):
            return f"the target is paused ({state['paused']}): resume it first"
        blocked = int(state.get("blocked_until") or 0) - now_ms()
        if blocked > 0:
            return (f"the target is rate-limited for {blocked / 1000:.0f} s more "
                    f"({state.get('last_error') or 'the portal said so'})")
        return None

    async def _why_not(self, spec: RentixTarget | TravtusTarget, group: str,
                       refs: list[str]) -> dict[str, str]:
        """Why these listings still differ after the group's flush."""
        why = await self._blocked(spec) or await self._group_holds(spec, group)
        if why is not None:
            return dict.fromkeys(refs, why)
        quarantined = await self.delivery.ledger.quarantined(spec.name, refs)
        return {ref: _quarantine_why(quarantined[ref]) if ref in quarantined else STILL_FOUND
                for ref in refs}

    async def _group_holds(self, spec: RentixTarget | TravtusTarget, group: str) -> str | None:
        """What stops the group's writes to the target: a held, discarded or refused sync, or
        a backoff after a failed call."""
        ledger = self.delivery.ledger
        if spec.mode == "group_sync":
            held = (await ledger.held(spec.name)).get(group)
            if held is not None:
                return f"its sync is held for an operator by the guards: {held.reason}"
            if await ledger.discarded(spec.name, group) is not None:
                return ("an operator discarded its held sync: that sync is not sent until the "
                        "group changes")
            scope = sync_scope(group)
            refused = (await ledger.quarantined(spec.name, [scope])).get(scope)
            if refused is not None:
                return f"its sync is {_quarantine_why(refused)}"
        _, not_before = await ledger.backoff(spec.name, group)
        if not_before > now_ms():
            error = (await ledger.target_state(spec.name)).get("last_error", "")
            return f"the portal call failed ({error}); the workers try again"
        return None

    async def _needs_repair(self, spec: RentixTarget | TravtusTarget, check: GroupCheck,
                            repair: Collection[Kind]) -> bool:
        """Something to send again, or a ledger that does not say what the portal holds."""
        if any(f.kind in repair and f.kind != "unknown" for f in check.findings):
            return True
        ledger = self.delivery.ledger
        if spec.mode == "per_listing":
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
                      fix: list[Finding]) -> str | None:
        """Flush the group with ``fix`` in doubt; why not, when it could not run."""
        # The repair plans the whole group: what the ledger said was settled is in doubt.
        await group_state.forget_settled(self.redis, check.group)
        claim = await self._claim(check.group)
        if claim is None:
            return "a flush of the group held it throughout: try again"
        try:
            async with self.delivery.flushes.leased(claim) as lease:
                flush = GroupFlush(self.delivery, claim, lease)
                await self._correct(flush, spec, check, fix)
                await flush.run()
        except LeaseLost as exc:
            return f"the repair lost the group's lease ({exc}): try again"
        return None

    async def _correct(self, flush: GroupFlush, spec: RentixTarget | TravtusTarget,
                       check: GroupCheck, fix: list[Finding]) -> None:
        """The ledger as the portal confirms it; what must be written again, in doubt."""
        ledger = flush.ledger
        adapter = self.adapters[spec.name]
        if adapter.mode == "per_listing":
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
        refs = sorted(text(r) for r in await self.redis.smembers(f"{ks().MEMBERS}{group}"))  # type: ignore[misc]
        found = await read_listings(self.redis, refs)
        return [found[ref] for ref in refs if ref in found]

    async def _known(self, refs: list[str]) -> set[str]:
        if not refs:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.exists(f"{ks().LISTING}{ref}")
            found = await pipe.execute()
        return {ref for ref, there in zip(refs, found, strict=True) if there}

    async def _not_sent_on_purpose(self, spec: RentixTarget | TravtusTarget,
                                   members: list[DesiredListing]) -> dict[str, str]:
        """Refs quarantined (the portal keeps an older version), held in adoption, or waiting
        in the outbox for a bulk (on their way: not drift), and why."""
        refs = [m.ref for m in members]
        quarantined = await self.delivery.ledger.quarantined(spec.name, refs)
        skip = {ref: _quarantine_why(entry) for ref, entry in quarantined.items()}
        if spec.mode == "per_listing":
            waiting = await self.delivery.outbox.waiting(spec.name, refs)
            skip |= dict.fromkeys(waiting, "queued for a bulk request: on its way, not yet "
                                  "confirmed")
            if await self.delivery.adoption.active(spec):
                held = await self.delivery.adoption.held(spec.name)
                skip |= {h.ref: "held for adoption until it is linked" for h in held}
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


def _repairable(repair: Collection[Kind]) -> set[Kind]:
    return set(repair) - {"unknown", UNREADABLE}


def _untouched(check: GroupCheck, repair: Collection[Kind]) -> GroupResult:
    """``check`` as it stands: findings left alone (or, if due for a repair, not repaired yet),
    all of them remaining."""
    outcomes = {f: _before_repair(f, repair) for f in check.findings}
    return GroupResult(check, outcomes, list(check.findings))


def _before_repair(finding: Finding, repair: Collection[Kind]) -> ListingOutcome:
    if finding.kind == "unknown":
        return ListingOutcome("left alone", "never sent there by the bridge: never touched")
    if finding.kind == UNREADABLE:
        return ListingOutcome("left alone", "its stored state cannot be read: nothing to send")
    if not repair:
        return ListingOutcome("found")
    if finding.kind not in repair:
        return ListingOutcome("left alone", f"{finding.kind} listings are only reported here")
    return ListingOutcome("not repaired", "no repair was attempted")


def _quarantine_why(entry: Quarantined) -> str:
    state = "quarantined, discarded by an operator" if entry.discarded else "quarantined"
    return f"{state} ({entry.error_type}: {entry.message})"
