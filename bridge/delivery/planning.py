"""Level-triggered planning: compare a group's desired state with what each target last
accepted, and work out what to send. No I/O: the flush reads the ledger and passes it in, so a
retry, a crash or a duplicate event gives the same plan, and nothing stale is ever sent.

Each write carries the key of its intent (``bridge/delivery/idempotency.py``): the standing
intent's key when the same write is still in flight, a fresh key otherwise. A standing intent
for other content also means the portal may hold that content, so the listing is written again
even when the ledger says the portal has the desired content already.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bridge.delivery.desired import BODY_FIELD, DesiredListing, Unreadable, excerpt
from bridge.delivery.idempotency import Intent, digest, key_for
from bridge.delivery.ledger import Accepted, Deletion, Quarantined, sync_scope
from bridge.portals import Problem, RentixAdapter, TravtusAdapter
from bridge.settings import GuardSettings

Operation = Literal["upsert", "hide", "delete"]
# The error type of a listing refused locally because its stored state cannot be read.
UNREADABLE = "unreadable_state"
# What a mapping raises on a body it cannot use (a stored body other than the webhook wrote).
MAPPING_ERRORS = (LookupError, TypeError, ValueError, AttributeError)


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
    base: str = ""  # the digest the target had accepted when this write was planned
    new_intent: bool = True  # its key is fresh: record the intent before sending

    @property
    def intent(self) -> Intent:
        return Intent(self.digest, self.base, self.key)


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
    @property
    def unreadable(self) -> Unreadable | None: ...


def desired_content(adapter: RentixAdapter | TravtusAdapter, listing: ListingContent
                    ) -> dict[str, Any] | Unreadable | None:
    """What a flush sends a target for this listing as it stands, before validation: the
    mapped listing; for a deleted one on a per-listing portal, its deletion payload (sent only
    if that target accepted the listing); None when nothing is sent (the portal's deletion
    behaviour is "none", or a group sync leaves the listing out). Unreadable when its stored
    state cannot be read, or its body does not map to this target's payload: nothing is sent
    and the target keeps what it holds."""
    if listing.unreadable is not None:
        return listing.unreadable
    try:
        return _payload(adapter, listing)
    except MAPPING_ERRORS as exc:
        return Unreadable(BODY_FIELD, excerpt(listing.body),
                          f"does not map to a {adapter.name} listing ({exc!r})")


def _payload(adapter: RentixAdapter | TravtusAdapter, listing: ListingContent
             ) -> dict[str, Any] | None:
    if adapter.mode == "per_listing":
        if listing.deleted or listing.body is None:
            return adapter.deletion_payload(listing.ref)
        return adapter.map_listing(listing.body)
    if listing.deleted or listing.body is None or not adapter.include_in_sync(listing.body):
        return None
    return adapter.map_listing(listing.body)


def desired_payload(adapter: RentixAdapter | TravtusAdapter, listing: ListingContent
                    ) -> dict[str, Any] | None:
    """``desired_content`` where an unreadable listing sends nothing: None."""
    content = desired_content(adapter, listing)
    return None if isinstance(content, Unreadable) else content


def desired_digest(adapter: RentixAdapter | TravtusAdapter, listing: ListingContent
                   ) -> str | None:
    """The digest a target's accepted record has once it holds this listing as it stands:
    the same comparison the planner makes to decide whether anything needs sending. For a
    listing that cannot be read, the digest its quarantine entry carries."""
    content = desired_content(adapter, listing)
    if isinstance(content, Unreadable):
        return unreadable_digest(content)
    return digest(content) if content is not None else None


def unreadable_digest(why: Unreadable) -> str:
    """Stands for the content of a listing that cannot be read: the same while it stays so."""
    return digest({UNREADABLE: [why.field, why.value, why.reason]})


def refusal(ref: str, why: Unreadable) -> Invalid:
    """A listing that cannot be read, refused as a portal's validation would refuse it: the
    flush quarantines it for the target like any invalid listing."""
    return Invalid(ref, Problem(UNREADABLE, why.message, why.field, ref),
                   unreadable_digest(why))


def plan_listings(target: str, adapter: RentixAdapter, desired: list[DesiredListing],
                  accepted: dict[str, Accepted], quarantined: dict[str, Quarantined],
                  intents: dict[str, Intent] | None = None) -> ListingPlan:
    """One write per listing whose content differs from what the target holds: what it last
    accepted, unless a standing intent says it may hold something else."""
    plan = ListingPlan()
    intents = intents or {}
    for listing in desired:
        intent = intents.get(listing.ref)
        payload = desired_content(adapter, listing)
        if isinstance(payload, Unreadable):
            _refuse(plan.invalid, refusal(listing.ref, payload), quarantined)
            continue  # nothing is written: the target keeps what it holds
        if payload is None:
            continue  # nothing to send: deletions are "none" for this target
        write = _write(listing, payload, accepted.get(listing.ref), intent)
        if write is None or _holds(write, accepted, intent):
            continue
        if write.operation == "upsert" and (problems := adapter.validate(payload)):
            _refuse(plan.invalid, Invalid(listing.ref, problems[0], write.digest), quarantined)
            continue
        if not _quarantined(listing.ref, write.digest, quarantined):
            plan.writes.append(write)
    return plan


def _write(listing: DesiredListing, payload: dict[str, Any], accepted: Accepted | None,
           intent: Intent | None) -> ListingWrite | None:
    if listing.deleted or listing.body is None:
        # Only what this target accepted from us (or may hold: a write in doubt) is ours to
        # take down.
        if accepted is None and intent is None:
            return None
        operation: Operation = "delete" if payload.get("op") == "delete" else "hide"
    else:
        operation = "upsert"
    d = digest(payload)
    base = accepted.digest if accepted else ""
    key, new = key_for(intent, d, base)
    return ListingWrite(listing.ref, operation, payload, d, key, listing.received_ms, base, new)


def _holds(write: ListingWrite, accepted: dict[str, Accepted], intent: Intent | None) -> bool:
    """Does the target hold this content already? Its record says so, and no write of other
    content is in doubt."""
    previous = accepted.get(write.ref)
    return (previous is not None and previous.digest == write.digest
            and (intent is None or intent.digest == write.digest))


def _quarantined(ref: str, content: str, quarantined: dict[str, Quarantined]) -> bool:
    entry = quarantined.get(ref)
    return entry is not None and entry.digest == content


def _refuse(invalid: list[Invalid], item: Invalid, quarantined: dict[str, Quarantined]
            ) -> None:
    """Report a refusal once: not again while that content stays quarantined."""
    if not _quarantined(item.ref, item.digest, quarantined):
        invalid.append(item)


@dataclass
class SyncPlan:
    group: str
    listings: list[dict[str, Any]]
    records: dict[str, Accepted]
    digest: str
    key: str
    deletions: list[Deletion]
    invalid: list[Invalid]
    fresh: list[str]  # refs sent with their current content (not a kept older version)
    received_ms: dict[str, int]
    unchanged: bool
    base: str = ""
    new_intent: bool = True

    @property
    def refs(self) -> list[str]:
        return sorted(self.records)

    @property
    def deleted_refs(self) -> list[str]:
        return [d.ref for d in self.deletions]

    @property
    def intent(self) -> Intent:
        return Intent(self.digest, self.base, self.key)


def plan_sync(adapter: TravtusAdapter, group: str, desired: list[DesiredListing],
              accepted: dict[str, Accepted], quarantined: dict[str, Quarantined],
              last_digest: str | None, now_ms: int, intent: Intent | None = None,
              elsewhere: dict[str, DesiredListing] | None = None,
              kept: dict[str, Accepted] | None = None) -> SyncPlan:
    """The group's complete state for a sync. A listing this portal refuses keeps its last
    accepted version in the sync, so a bad edit never deletes it. ``elsewhere`` holds the
    desired state of accepted listings that are no longer members of the group (moved away),
    to tell why the sync deletes them. ``kept``: members the target has settled, with the
    record it accepted, carried into the sync as they are (no mapping)."""
    records: dict[str, Accepted] = dict(kept or {})
    invalid: list[Invalid] = []
    fresh: list[str] = []
    received: dict[str, int] = {}
    for listing in desired:
        entry = _sync_entry(adapter, listing, now_ms)
        if entry is None:  # deleted, or left out of the sync
            continue
        if isinstance(entry, Invalid):
            _refuse(invalid, entry, quarantined)
            if listing.ref in accepted:  # kept as accepted: never deleted for this
                records[listing.ref] = accepted[listing.ref]
            continue
        records[listing.ref] = entry
        fresh.append(listing.ref)
        received[listing.ref] = listing.received_ms
    ordered = [records[ref] for ref in sorted(records)]
    sync_digest = digest([r.digest for r in ordered] + [group])
    key, new = key_for(intent, sync_digest, last_digest)
    members = {listing.ref: listing for listing in desired}
    return SyncPlan(
        group=group,
        listings=[r.payload for r in ordered if r.payload is not None],
        records=records,
        digest=sync_digest,
        key=key,
        deletions=[deletion_cause(ref, group, members.get(ref), (elsewhere or {}).get(ref))
                   for ref in sorted(set(accepted) - set(records))],
        invalid=invalid,
        fresh=fresh,
        received_ms=received,
        unchanged=sync_digest == last_digest and (intent is None or intent.digest == sync_digest),
        base=last_digest or "",
        new_intent=new,
    )


def _sync_entry(adapter: TravtusAdapter, listing: DesiredListing, now_ms: int
                ) -> Accepted | Invalid | None:
    """A listing as a sync carries it (the record it would leave), refused (unreadable, or
    invalid for the portal), or None: left out."""
    payload = desired_content(adapter, listing)
    if payload is None:
        return None
    if isinstance(payload, Unreadable):
        return refusal(listing.ref, payload)
    d = digest(payload)
    problems = adapter.validate(payload)
    return Invalid(listing.ref, problems[0], d) if problems else Accepted(d, payload, now_ms)


def deletion_cause(ref: str, group: str, member: DesiredListing | None,
                   elsewhere: DesiredListing | None) -> Deletion:
    """Why a group sync deletes ``ref``: *explicit* when the CRM asked for it (deleted, moved
    to another group, hidden), *inferred* when the bridge concluded it (absent from a snapshot,
    or no longer known at all)."""
    if member is None:
        if elsewhere is not None and elsewhere.group and elsewhere.group != group:
            return Deletion(ref, "explicit", f"moved to group {elsewhere.group}")
        return Deletion(ref, "inferred", "the bridge no longer holds this listing")
    if member.unreadable is not None:
        return Deletion(ref, "inferred", f"its state cannot be read: {member.unreadable.message}")
    if member.deleted:
        if member.cause == "snapshot":
            return Deletion(ref, "inferred", "absent from the group's latest snapshot")
        return Deletion(ref, "explicit", "deleted in the CRM")
    return Deletion(ref, "explicit", "hidden in the CRM")


def removes(write: ListingWrite, listing: DesiredListing, on_portal: bool) -> bool:
    """Does a per-listing write take the listing off the portal: a deletion or a hide, or an
    update that hides a listing the portal shows (the CRM hid it; a group sync leaves such a
    listing out, the guards count it as the same deletion)?"""
    if write.operation != "upsert":
        return True
    return on_portal and listing.body is not None and listing.body.get("status") == "hidden"


def unknown_deletions(refs: list[str]) -> list[Deletion]:
    """Listings on the portal that the bridge never sent there: a sync would delete them."""
    return [Deletion(ref, "inferred", "on the portal, never sent there by the bridge")
            for ref in refs]


def guard_reason(deletions: list[Deletion], listings: int, accepted_count: int,
                 guard: GuardSettings) -> str | None:
    """Why a sync must be held for an operator, or None. A sync deletes what it leaves out.
    Every deletion counts toward max_delete_count (a storm of deletes is still held); only
    inferred ones toward max_delete_fraction; an empty sync is always held."""
    if not listings:
        return "the sync would be empty: it would delete every listing of the group"
    total = len(deletions)
    if total > guard.max_delete_count:
        return (f"it would delete {total} listings, more than guard.max_delete_count "
                f"= {guard.max_delete_count}")
    inferred = sum(1 for d in deletions if d.cause == "inferred")
    if accepted_count and inferred / accepted_count > guard.max_delete_fraction:
        return (f"it would delete {inferred} of the group's {accepted_count} listings that the "
                f"CRM did not ask to delete, more than guard.max_delete_fraction "
                f"= {guard.max_delete_fraction}")
    return None


__all__ = ["UNREADABLE", "Invalid", "ListingPlan", "ListingWrite", "SyncPlan", "deletion_cause",
           "desired_content", "desired_digest", "desired_payload", "guard_reason",
           "plan_listings", "plan_sync", "refusal", "removes", "sync_scope", "unknown_deletions",
           "unreadable_digest"]
