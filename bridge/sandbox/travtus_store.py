"""Travtus data: groups, their listings (by identifier and by external reference), schedules."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import date
from typing import Any

FIRST_IDENTIFIER = 1001


@dataclass
class Group:
    group_id: str
    external_ref: str | None
    members: dict[str, None] = field(default_factory=dict)  # identifiers, in creation order
    by_ref: dict[str, str] = field(default_factory=dict)  # external_reference -> identifier


@dataclass
class Listing:
    identifier: str
    group_id: str
    external_reference: str | None
    fields: dict[str, Any]
    unit_id: str
    inactive_date: date | None = None  # scheduled deletion


@dataclass
class TravtusStore:
    groups: dict[str, Group] = field(default_factory=dict)  # by group_id
    groups_by_ref: dict[str, Group] = field(default_factory=dict)
    listings: dict[str, Listing] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)  # group refs (or ids) refused access
    scheduled: dict[str, date] = field(default_factory=dict)
    _identifiers: itertools.count[int] = field(
        default_factory=lambda: itertools.count(FIRST_IDENTIFIER))
    _group_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _unit_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- groups ----------------------------------------------------------------------------------

    def group(self, group_id: str | None, external_ref: str | None,
              create: bool = False) -> Group | None:
        """The group a request names; an unknown external ref is created when `create`."""
        if group_id is not None:
            return self.groups.get(group_id)
        if external_ref is None:
            return None
        found = self.groups_by_ref.get(external_ref)
        if found is None and create:
            found = self.add_group(external_ref=external_ref)
        return found

    def add_group(self, external_ref: str | None = None, group_id: str | None = None) -> Group:
        group = Group(group_id or str(next(self._group_ids)), external_ref)
        self.groups[group.group_id] = group
        if external_ref is not None:
            self.groups_by_ref[external_ref] = group
        return group

    def is_denied(self, group: Group) -> bool:
        return group.group_id in self.denied or (
            group.external_ref is not None and group.external_ref in self.denied
        )

    # -- listings --------------------------------------------------------------------------------

    def put(self, group: Group, external_reference: str | None, fields: dict[str, Any],
            existing: Listing | None = None) -> Listing:
        """Replace `existing` whole, or create a new listing in the group."""
        unit_id = fields.get("unit_id")
        if existing is not None:
            existing.fields = fields
            # A unit made for this listing earlier is kept when the update names none.
            existing.unit_id = str(unit_id) if unit_id is not None else existing.unit_id
            existing.inactive_date = None
            self.scheduled.pop(existing.identifier, None)
            return existing
        listing = Listing(
            identifier=str(next(self._identifiers)), group_id=group.group_id,
            external_reference=external_reference, fields=fields,
            unit_id=str(unit_id) if unit_id is not None else f"unit-{next(self._unit_ids)}",
        )
        self.listings[listing.identifier] = listing
        group.members[listing.identifier] = None
        if external_reference is not None:
            group.by_ref[external_reference] = listing.identifier
        return listing

    def by_ref(self, group: Group, external_reference: str) -> Listing | None:
        identifier = group.by_ref.get(external_reference)
        return None if identifier is None else self.listings.get(identifier)

    def delete(self, identifier: str) -> None:
        listing = self.listings.pop(identifier, None)
        self.scheduled.pop(identifier, None)
        if listing is None:
            return
        group = self.groups.get(listing.group_id)
        if group is not None:
            group.members.pop(identifier, None)
            if listing.external_reference is not None:
                group.by_ref.pop(listing.external_reference, None)

    def schedule(self, listing: Listing, when: date) -> None:
        listing.inactive_date = when
        self.scheduled[listing.identifier] = when

    def purge(self, today: date) -> None:
        """Carry out deletions scheduled for today or earlier."""
        due = [i for i, when in self.scheduled.items() if when <= today]
        for identifier in due:
            self.delete(identifier)

    def group_listings(self, group: Group) -> list[Listing]:
        return [self.listings[i] for i in group.members]
