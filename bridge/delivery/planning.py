"""Level-triggered planning: compare a group's desired state with what each target last
accepted, and work out what to send. Pure functions, no I/O: a retry, a crash or a duplicate
event gives the same plan, so nothing stale or repeated is ever sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bridge.delivery.claims import DesiredListing
from bridge.delivery.idempotency import digest, idempotency_key
from bridge.delivery.ledger import Accepted, Quarantined
from bridge.portals import Problem, RentixAdapter, TravtusAdapter
from bridge.settings import GuardSettings

Operation = Literal["upsert", "hide", "delete"]


@dataclass(frozen=True)
class Invalid:
    ref: str
    problem: Problem
    digest: str


@dataclass(frozen=True)
class ListingWrite:
    ref: str
    operation: Operation
    payload: dict[str, Any]
    digest: str
    key: str
    received_ms: int


@dataclass
class ListingPlan:
    writes: list[ListingWrite] = field(default_factory=list)
    invalid: list[Invalid] = field(default_factory=list)


class ListingContent(Protocol):
    """What a listing's payload depends on: a claimed listing, or one read for an operator."""

    @property
    def ref(self) -> str: ...
    @property
    def deleted(self) -> bool: ...
    @property
    def body(self) -> dict[str, Any] | None: ...


def desired_payload(adapter: RentixAdapter | TravtusAdapter, listing: ListingContent
                    ) -> dict[str, Any] | None:
    """What a flush sends a target for this listing as it stands, before validation: the
    mapped listing; for a deleted one on a per-listing portal, its deletion payload (sent only
    if that target accepted the listing); None when nothing is sent (the portal's deletion
    behaviour is "none", or a group sync leaves the listing out)."""
    if isinstance(adapter, RentixAdapter):
        if listing.deleted or listing.body is None:
            return adapter.deletion_payload(listing.ref)
        return adapter.map_listing(listing.body)
    if listing.deleted or listing.body is None or not adapter.include_in_sync(listing.body):
        return None
    return adapter.map_listing(listing.body)


def desired_digest(adapter: RentixAdapter | TravtusAdapter, listing: ListingContent
                   ) -> str | None:
    """The digest a target's accepted record has once it holds this listing as it stands:
    the same comparison the planner makes to decide whether anything needs sending."""
    payload = desired_payload(adapter, listing)
    return digest(payload) if payload is not None else None


def plan_listings(target: str, adapter: RentixAdapter, desired: list[DesiredListing],
                  accepted: dict[str, Accepted], quarantined: dict[str, Quarantined],
                  retries: dict[str, int] | None = None) -> ListingPlan:
    """One write per listing whose content differs from what the target last accepted.
    ``retries`` counts operator retries per ref: each one is a new intent, so a new key."""
    plan = ListingPlan()
    retries = retries or {}
    for listing in desired:
        retry = retries.get(listing.ref, 0)
        if listing.deleted or listing.body is None:
            write = _deletion(target, adapter, listing, accepted, retry)
        else:
            payload = desired_payload(adapter, listing)
            assert payload is not None  # a listing with a body always maps
            d = digest(payload)
            write = ListingWrite(listing.ref, "upsert", payload, d,
                                 _key(target, "upsert", listing.ref, d, accepted, retry),
                                 listing.received_ms)
            if (problems := adapter.validate(payload)) and not _same(write, accepted):
                if not _quarantined(listing.ref, d, quarantined):
                    plan.invalid.append(Invalid(listing.ref, problems[0], d))
                continue
        if write and not _same(write, accepted) and not _quarantined(
                listing.ref, write.digest, quarantined):
            plan.writes.append(write)
    return plan


def _deletion(target: str, adapter: RentixAdapter, listing: DesiredListing,
              accepted: dict[str, Accepted], retry: int) -> ListingWrite | None:
    # Only what this target accepted from us is ours to take down.
    if listing.ref not in accepted:
        return None
    payload = desired_payload(adapter, listing)
    if payload is None:
        return None
    operation: Operation = "delete" if payload.get("op") == "delete" else "hide"
    d = digest(payload)
    return ListingWrite(listing.ref, operation, payload, d,
                        _key(target, operation, listing.ref, d, accepted, retry),
                        listing.received_ms)


def _key(target: str, operation: str, ref: str, content: str,
         accepted: dict[str, Accepted], retry: int) -> str:
    previous = accepted[ref].digest if ref in accepted else None
    return idempotency_key(target, operation, ref, content, previous=previous, retry=retry)


def _same(write: ListingWrite, accepted: dict[str, Accepted]) -> bool:
    previous = accepted.get(write.ref)
    return previous is not None and previous.digest == write.digest


def _quarantined(ref: str, content: str, quarantined: dict[str, Quarantined]) -> bool:
    entry = quarantined.get(ref)
    return entry is not None and entry.digest == content


@dataclass
class SyncPlan:
    group: str
    listings: list[dict[str, Any]]
    records: dict[str, Accepted]
    digest: str
    key: str
    deletions: list[str]
    invalid: list[Invalid]
    fresh: list[str]  # refs sent with their current content (not a kept older version)
    received_ms: dict[str, int]
    unchanged: bool

    @property
    def refs(self) -> list[str]:
        return sorted(self.records)


def plan_sync(target: str, adapter: TravtusAdapter, group: str,
              desired: list[DesiredListing], accepted: dict[str, Accepted],
              quarantined: dict[str, Quarantined], last_digest: str | None,
              now_ms: int, retry: int = 0) -> SyncPlan:
    """The group's complete state for a sync. A listing this portal refuses keeps its last
    accepted version in the sync, so a bad edit never deletes it."""
    records: dict[str, Accepted] = {}
    invalid: list[Invalid] = []
    fresh: list[str] = []
    received: dict[str, int] = {}
    for listing in desired:
        payload = desired_payload(adapter, listing)
        if payload is None:  # deleted, or left out of the sync
            continue
        d = digest(payload)
        problems = adapter.validate(payload)
        if problems:
            if not _quarantined(listing.ref, d, quarantined):
                invalid.append(Invalid(listing.ref, problems[0], d))
            if listing.ref in accepted:
                records[listing.ref] = accepted[listing.ref]
            continue
        records[listing.ref] = Accepted(d, payload, now_ms)
        fresh.append(listing.ref)
        received[listing.ref] = listing.received_ms
    ordered = [records[ref] for ref in sorted(records)]
    sync_digest = digest([r.digest for r in ordered] + [group])
    return SyncPlan(
        group=group,
        listings=[r.payload for r in ordered if r.payload is not None],
        records=records,
        digest=sync_digest,
        key=idempotency_key(target, "sync", group, sync_digest, previous=last_digest,
                            retry=retry),
        deletions=sorted(set(accepted) - set(records)),
        invalid=invalid,
        fresh=fresh,
        received_ms=received,
        unchanged=sync_digest == last_digest,
    )


def guard_reason(plan: SyncPlan, accepted_count: int, guard: GuardSettings) -> str | None:
    """Why this sync must be held for an operator, or None. A sync deletes what it leaves out."""
    if not plan.listings:
        return "the sync would be empty: it would delete every listing of the group"
    deletions = len(plan.deletions)
    if deletions > guard.max_delete_count:
        return (f"it would delete {deletions} listings, more than guard.max_delete_count "
                f"= {guard.max_delete_count}")
    if accepted_count and deletions / accepted_count > guard.max_delete_fraction:
        return (f"it would delete {deletions} of the group's {accepted_count} listings, more "
                f"than guard.max_delete_fraction = {guard.max_delete_fraction}")
    return None
