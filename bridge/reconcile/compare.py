"""What a portal holds against what the CRM wants there: pure comparisons, no I/O.

Four kinds of finding (contract §5, ``bridge reconcile``):

* **missing**: desired on the portal, not there;
* **drift**: there with other content (the fields that differ are named);
* **stale**: there, but deleted, hidden or moved away in the CRM;
* **unknown**: there, never sent by the bridge and not linked to anything it knows.

Listings the portal holds exactly as desired are *in step*: the ledger may be corrected to them
without a write. Listings the bridge is not sending on purpose (quarantined at this content,
held in adoption) are left out: the other views already show them. A listing whose stored state
cannot be read is not compared but reported as **unreadable**, with the cause, on every check
until it is mended: not a portal's drift, so not counted among ``KINDS``, and never repaired.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.delivery import Accepted, DesiredListing, Unreadable, desired_content, digest
from bridge.portals import RentixAdapter, TravtusAdapter

Kind = Literal["missing", "drift", "stale", "unknown", "unreadable"]
# The ways a portal is out of step: counted per check and per pass, and repairable.
KINDS: tuple[Kind, ...] = ("missing", "drift", "stale", "unknown")
UNREADABLE: Kind = "unreadable"


@dataclass(frozen=True)
class Finding:
    target: str
    group: str
    ref: str
    kind: Kind
    detail: str
    fields: tuple[str, ...] = ()


@dataclass
class GroupCheck:
    """One group on one target: what is wrong, and what the portal holds as desired."""

    target: str
    group: str
    findings: list[Finding] = field(default_factory=list)
    in_step: dict[str, Accepted] = field(default_factory=dict)  # ref -> what it holds
    # ref -> why it was not compared: not sent on purpose (quarantined, queued for a bulk...)
    left_out: dict[str, str] = field(default_factory=dict)

    def add(self, ref: str, kind: Kind, detail: str, fields: Iterable[str] = ()) -> None:
        self.findings.append(Finding(self.target, self.group, ref, kind, detail, tuple(fields)))

    def unreadable(self, ref: str, why: Unreadable) -> None:
        """``ref``'s desired state cannot be read: nothing to compare, the cause to show."""
        self.add(ref, UNREADABLE, why.message, [why.field])

    def refs(self, *kinds: Kind) -> list[str]:
        return sorted({f.ref for f in self.findings if f.kind in kinds})


def compare_listings(target: str, group: str, adapter: RentixAdapter,
                     members: list[DesiredListing], items: dict[str, dict[str, Any] | None],
                     skip: Collection[str], now_ms: int) -> GroupCheck:
    """A per-listing portal's view of one group: ``items`` maps each member's ref to the
    portal's read model (None: not there); ``skip`` are refs not being sent on purpose."""
    check = GroupCheck(target, group)
    for listing in members:
        payload = desired_content(adapter, listing)
        if isinstance(payload, Unreadable):
            check.unreadable(listing.ref, payload)
            continue
        if listing.ref in skip or payload is None:
            continue  # not sent on purpose, or deletions are "none" on this target
        item = items.get(listing.ref)
        if listing.deleted or listing.body is None:
            if payload.get("announcementStatus") == "hidden" and item is None:
                continue  # hidden where it never was: nothing to take down
        elif adapter.validate(payload):
            continue  # the portal keeps its last accepted version: quarantine, not drift
        differences = adapter.held_by_portal(payload, item)
        if not differences:
            check.in_step[listing.ref] = Accepted(digest(payload), payload, now_ms)
        elif item is None:
            check.add(listing.ref, "missing", "not on the portal")
        elif listing.deleted or payload.get("announcementStatus") == "hidden":
            why = "deleted" if listing.deleted else "hidden"
            check.add(listing.ref, "stale", f"on the portal ({adapter.portal_state(item)}), "
                      f"{why} in the CRM", [d.field for d in differences])
        else:
            check.add(listing.ref, "drift", "on the portal with other content: "
                      + ", ".join(d.field for d in differences), [d.field for d in differences])
    return check


def compare_group(target: str, group: str, adapter: TravtusAdapter,
                  members: list[DesiredListing], items: list[dict[str, Any]],
                  elsewhere: dict[str, DesiredListing], skip: Collection[str],
                  now_ms: int) -> GroupCheck:
    """A group-sync portal's view of one group: ``items`` is what it holds for the group;
    ``elsewhere`` the desired state of portal refs that are not members (moved away)."""
    check = GroupCheck(target, group)
    held = {ref: item for item in items if (ref := adapter.portal_ref(item))}
    wanted = {listing.ref: listing for listing in members}
    for ref, listing in wanted.items():
        payload = desired_content(adapter, listing)
        if isinstance(payload, Unreadable):
            check.unreadable(ref, payload)
            continue
        if ref in skip:
            continue
        item = held.get(ref)
        if payload is None:  # deleted or hidden: the group should not hold it
            if item is not None:
                why = "deleted" if listing.deleted else "hidden"
                check.add(ref, "stale", f"on the portal, {why} in the CRM")
            continue
        if adapter.validate(payload):
            continue
        differences = adapter.held_by_portal(payload, item)
        if not differences:
            check.in_step[ref] = Accepted(digest(payload), payload, now_ms)
        elif item is None:
            check.add(ref, "missing", "not in the portal's group")
        else:
            check.add(ref, "drift", "in the portal's group with other content: "
                      + ", ".join(d.field for d in differences), [d.field for d in differences])
    for ref in sorted(set(held) - set(wanted)):
        moved = elsewhere.get(ref)
        if moved is not None and moved.unreadable is not None:
            check.unreadable(ref, moved.unreadable)
        elif moved is not None and moved.group and moved.group != group:
            check.add(ref, "stale", f"on the portal in this group, moved to {moved.group} "
                      "in the CRM")
        elif moved is not None:
            check.add(ref, "stale", "on the portal, deleted in the CRM")
        else:
            check.add(ref, "unknown", "on the portal, never sent there by the bridge")
    return check


def unknown_items(target: str, adapter: RentixAdapter, items: Iterable[dict[str, Any]],
                  known: set[str]) -> list[Finding]:
    """Listings of a per-listing portal that no CRM listing the bridge knows is linked to."""
    found = []
    for item in items:
        ref = adapter.portal_ref(item)
        portal_id = str(item.get("id", "?"))
        if ref is None:
            found.append(Finding(target, "", f"#{portal_id}", "unknown",
                                 "made on the portal, not linked to any CRM listing"))
        elif ref not in known:
            found.append(Finding(target, "", ref, "unknown",
                                 f"#{portal_id} is linked to {ref}, which the CRM never sent"))
    return found
