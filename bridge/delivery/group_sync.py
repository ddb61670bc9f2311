"""Delivery to a group-sync portal (Travtus): one call carries the group's whole state, so
the portal is read before a sync that would delete what the bridge does not know of, and a
refused listing is quarantined and the sync sent again without it."""

from __future__ import annotations

import logging
from typing import Any

from bridge.clock import now_ms
from bridge.delivery.claims import (
    LeaseLost,
    Stamp,
    stamp,
)
from bridge.delivery.desired import DesiredListing, read_listings
from bridge.delivery.guard import NOTHING, Proposal
from bridge.delivery.ledger import (
    Accepted,
    Held,
    Quarantined,
    sync_scope,
    token_expiry,
)
from bridge.delivery.planning import (
    Invalid,
    SyncPlan,
    deletion_cause,
    plan_sync,
    unknown_deletions,
)
from bridge.delivery.tombstones import sync_done
from bridge.delivery.turns import REFUSED, FlushScope, problem
from bridge.logs import about
from bridge.portals import (
    Outcome,
    PortalError,
    Result,
    TravtusAdapter,
)
from bridge.settings import TravtusTarget

# The flush's logger: a flush's lines read alike whatever the mode.
log = logging.getLogger("bridge.delivery.flush")


class GroupSyncFlow:
    """A group-sync target's part in one flush (a :class:`~bridge.delivery.turns.TargetFlow`)."""

    def __init__(self, scope: FlushScope, target: TravtusTarget, adapter: TravtusAdapter
                 ) -> None:
        self.f = scope
        self.target = target
        self.adapter = adapter
        self.desired: dict[str, dict[str, DesiredListing]] = {}  # what the sync was planned from

    async def turn(self, deadline: float) -> int | None:
        return await self._group_sync(self.target, self.adapter)

    async def done_with(self, deleted: list[DesiredListing]) -> set[str]:
        refs = [listing.ref for listing in deleted]
        name, group, ledger = self.target.name, self.f.group, self.f.ledger
        held = set(await ledger.accepted(name, group, refs))
        in_doubt = bool(await ledger.intents(name, [sync_scope(group)]))
        return {ref for ref in refs if sync_done(held, in_doubt, ref)}

    async def _group_sync(self, target: TravtusTarget, adapter: TravtusAdapter) -> int | None:
        name, group = target.name, self.f.group
        plan, accepted, quarantined, last = await self._plan_sync(name, adapter)
        await self.f.trace.sync_planned(name, adapter, plan, accepted, quarantined)
        await self.f.quarantine(name, plan.invalid)
        if plan.unchanged or (last is None and not plan.listings and not accepted
                              and not await self._sync_in_doubt(name)):
            # Unchanged, or a group we have never synced with nothing to say: no change to
            # judge, and a change held before is no more.
            self.f.guard.leave(name)
            await self.f.withheld(name, NOTHING, whole=True)
            self.f.settled.add(name)
            return None
        if _quarantined_sync(plan, quarantined.get(sync_scope(group))):
            return None
        try:
            proposal, on_portal = await self._sync_proposal(name, adapter, plan, accepted, last)
        except PortalError as exc:
            return await self.f.setback(name, exc.result)
        verdict = await self.f.guard.judge(name, proposal)
        withheld, released = await self.f.withheld(name, verdict, whole=True)
        if withheld:
            return await self._sync_withheld(target, adapter, withheld, accepted)
        if not released and on_portal is not None and _holds_exactly(adapter, plan, on_portal):
            # The portal already holds the group as desired (say, after Redis lost its
            # data): the ledger learns it, and nothing is written.
            await self.f.ledger.record_sync(name, group, plan.digest, plan.records,
                                            plan.fresh, self.f.epoch, accepted,
                                            self._planned(name, plan))
            await self.f.trace.unchanged(name, "the portal holds it already")
            self.f.settled.add(name)
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
        name, group = target.name, self.f.group
        wait = await self.f.rate_slot(name, target.requests_per_minute)
        if wait:
            return wait
        attempts, _ = await self.f.ledger.backoff(name, group)
        if plan.new_intent:
            await self.f.ledger.intend(name, {sync_scope(group): plan.intent})
        await self.f.trace.sync_sent(name, plan)
        self.f.lease.ensure()
        result = await adapter.sync(group, plan.listings, plan.key)
        latencies = [now_ms() - plan.received_ms[r] for r in plan.fresh] if result.ok else []
        try:
            await self._record(plan, result, attempts + 1, latencies)
            if result.ok:
                await self.f.ledger.record_sync(name, group, plan.digest, plan.records,
                                                plan.fresh, self.f.epoch, accepted,
                                                self._planned(name, plan), keep_held=holding)
        except LeaseLost:
            if result.ok:
                await self.f.after_lost_write(name, sync_scope(group), plan.digest)
            raise
        if result.ok:
            if attempts:
                await self.f.ledger.clear_backoff(name, group)
            if not holding:
                self.f.settled.add(name)
            return None
        return await self._sync_refused(name, plan, result)

    def _planned(self, name: str, plan: SyncPlan) -> dict[str, Stamp]:
        """What the sync's fresh listings were planned from."""
        desired = self.desired[name]
        return {ref: stamp(desired[ref]) for ref in plan.fresh}

    async def _sync_in_doubt(self, name: str) -> bool:
        """A sync recorded as in flight and never answered (its flush lost the lease, or died)
        may have reached the portal: the group is not one that was never synced."""
        return bool(await self.f.ledger.intents(name, [sync_scope(self.f.group)]))

    async def _plan_sync(self, name: str, adapter: TravtusAdapter, keep: set[str] | None = None
                         ) -> tuple[SyncPlan, dict[str, Accepted], dict[str, Quarantined],
                                    str | None]:
        """The group's whole state for a sync. Members the target has settled keep the payload
        it accepted (not read, not mapped again); only the changes are planned afresh, unless
        the target settled nothing or Redis may have lost state since it was last checked.
        ``keep``: listings whose deletion is held, kept in the sync as the target accepted
        them."""
        group = self.f.group
        accepted = await self.f.ledger.accepted(name, group)
        whole = (self.f.claim.settled.get(name) is None
                 or await self.f.ledger.verified(name, group) != self.f.epoch)
        kept = {} if whole else {ref: accepted[ref] for ref in self.f.claim.others
                                 if ref in accepted}
        kept.update({ref: accepted[ref] for ref in keep or () if ref in accepted})
        desired = [*self.f.claim.listings,
                   *await self.f.listings_of([r for r in self.f.claim.others if r not in kept])]
        self.desired[name] = {listing.ref: listing for listing in desired}
        refs = [listing.ref for listing in desired]
        quarantined = await self.f.ledger.quarantined(name, [*refs, sync_scope(group)])
        last = await self.f.ledger.sync_digest(name, group)
        intent = (await self.f.ledger.intents(name, [sync_scope(group)])).get(sync_scope(group))
        # Listings that left the group: where they went, if anywhere (why the sync deletes them).
        elsewhere = await read_listings(self.f.d.redis,
                                        sorted(set(accepted) - set(refs) - set(kept)))
        plan = plan_sync(adapter, group, desired, accepted, quarantined, last, now_ms(),
                         intent, elsewhere, kept)
        return plan, accepted, quarantined, last

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
        verified = await self.f.ledger.verified(name, plan.group)
        members = self.desired.get(name, {})
        # An unreadable listing the sync cannot carry: only the portal says if it would go.
        dark = any(m.unreadable is not None and ref not in plan.records
                   for ref, m in members.items())
        if deletions or last is None or verified != self.f.epoch or dark:
            self.f.lease.ensure()
            on_portal = await adapter.find_all(plan.group)
            self.f.lease.ensure()
            known = set(self.f.claim.members)
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
        group = self.f.group
        if result.outcome in REFUSED:
            ref = result.listing_ref
            if ref and ref in plan.records:
                # Quarantine that listing and try again at once without it.
                invalid = Invalid(ref, problem(result), plan.records[ref].digest)
                await self.f.quarantine(name, [invalid], settled=[sync_scope(group)])
                return now_ms()
            await self.f.quarantine(name, [Invalid(sync_scope(group), problem(result),
                                                   plan.digest)])
            return None
        if result.outcome is Outcome.CREDENTIALS_INVALID and result.error_type == \
                "no_access_to_group":
            reason = f"the portal refuses access to this group: {result.message}"
            held = Held(plan.digest, reason, [], len(plan.listings), now_ms())
            await self.f.ledger.hold(name, group, held)
            await self.f.trace.held(name, held)
            log.warning("holding the sync of %s on %s: %s", group, name, reason,
                        extra=about(group, name))
            return None
        return await self.f.setback(name, result)

    async def _record(self, plan: SyncPlan, result: Result, attempt: int,
                      latencies: list[int]) -> None:
        """Record the sync's call, with the token's expiry when this process fetched a token
        it has not recorded yet (so once per token, not with every sync)."""
        name = self.target.name
        expires = self.adapter.tokens.expires_at
        token = None if expires == self.f.d.token_expiry_recorded.get(name) else expires
        writes = [] if token is None else [token_expiry(name, token)]
        await self.f.record(name, "sync", plan.refs, plan.key, result, attempt, latencies,
                            seen=lambda _: writes)
        if token is not None:
            self.f.d.token_expiry_recorded[name] = token


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


def _quarantined_sync(plan: SyncPlan, entry: Quarantined | None) -> bool:
    return entry is not None and entry.digest == plan.digest
