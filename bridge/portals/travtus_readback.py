"""Does Travtus hold our sync listing? Our `POST /listing/sync/` listing object against an item
of `POST /listings/find/` (travtus-listing-sync.md).

The find view names some fields otherwise (`external_ref`), derives others
(`rent_for_12_month_lease` and `deposit_for_12_month_lease` from the 12-month lease term;
`full_bathrooms` and `half_bathrooms` from the bathrooms) and leaves some out (`address`,
`lease_terms` beyond 12 months, `active_date`): those cannot be compared. A sync replaces each
listing whole, omitted fields cleared (portal-interpretations.md), so a field we left out that
the portal holds is a difference too. Differences are named in our payload's vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from bridge.portals.readback import (
    FieldDifference,
    is_number,
    same,
    same_date,
    same_flag,
    same_set,
)

LEASE_MONTHS = 12  # the only lease length the find view reports
RENT = "lease_terms[].rent"
DEPOSIT = "lease_terms[].deposit"
REF = "external_reference"

Same = Callable[[Any, Any], bool]
# our sync field -> (the find view's field, how the portal compares them)
DIRECT: dict[str, tuple[str, Same]] = {
    REF: ("external_ref", same),
    "unit_type": ("unit_type", same),
    "listing_url": ("listing_url", same),
    "bedrooms": ("bedrooms", same),
    "description": ("description", same),
    "image_urls": ("image_urls", same),  # in order: the first is the cover
    "amenities": ("amenities", same_set),
    "features": ("features", same_set),
    "finish": ("finish", same),
    "floorplan_url": ("floorplan_url", same),
    "tour_url": ("tour_url", same),
    "unit_number": ("unit_number", same),
    "move_in_date": ("move_in_date", same_date),
    "is_furnished": ("is_furnished", same_flag),
    "is_flex": ("is_flex", same_flag),
    "sqft": ("sqft", same),
}
# Ids the portal assigns when we send none: compared only when we did send one.
ASSIGNED = {"identifier": "identifier", "unit_id": "unit_id"}


def portal_ref(item: dict[str, Any]) -> str | None:
    ref = item.get("external_ref")
    return ref if isinstance(ref, str) and ref else None


def held_by_portal(payload: dict[str, Any], item: dict[str, Any] | None
                   ) -> list[FieldDifference]:
    """The fields of `payload` that `item` does not hold as sent; [] when it holds them all.
    `item` None (not among the group's active listings) is a difference on
    `external_reference`."""
    if item is None:
        return [FieldDifference(REF, payload.get(REF), None)]
    differences = [FieldDifference(ours, payload.get(ours), item.get(theirs))
                   for ours, (theirs, equal) in DIRECT.items()
                   if not equal(payload.get(ours), item.get(theirs))]
    differences += [FieldDifference(ours, payload[ours], item.get(theirs))
                    for ours, theirs in ASSIGNED.items()
                    if payload.get(ours) is not None and not same(payload[ours], item.get(theirs))]
    differences += _lease(payload, item)
    bathrooms = _bathrooms(payload, item)
    return differences + ([bathrooms] if bathrooms else [])


def _lease(payload: dict[str, Any], item: dict[str, Any]) -> list[FieldDifference]:
    term = _twelve_month_term(payload.get("lease_terms"))
    pairs = ((RENT, "rent", "rent_for_12_month_lease"),
             (DEPOSIT, "deposit", "deposit_for_12_month_lease"))
    return [FieldDifference(name, term.get(ours), item.get(theirs))
            for name, ours, theirs in pairs if not same(term.get(ours), item.get(theirs))]


def _twelve_month_term(terms: Any) -> dict[str, Any]:
    for term in terms if isinstance(terms, list) else []:
        if isinstance(term, dict) and same(term.get("length_in_months"), LEASE_MONTHS):
            return term
    return {}


def _bathrooms(payload: dict[str, Any], item: dict[str, Any]) -> FieldDifference | None:
    """Reads derive full bathrooms (with shower or bath) and half ones (without) from what
    was sent: a `bathrooms[]` list, or a `number_of_bathrooms` count where a half counts 0.5."""
    full, half = item.get("full_bathrooms") or 0, item.get("half_bathrooms") or 0
    theirs = {"full_bathrooms": item.get("full_bathrooms"),
              "half_bathrooms": item.get("half_bathrooms")}
    if isinstance(payload.get("bathrooms"), list):
        rooms = [r for r in payload["bathrooms"] if isinstance(r, dict)]
        showers = sum(1 for r in rooms if r.get("has_shower_or_bath"))
        held = same(showers, full) and same(len(rooms) - showers, half)
        return None if held else FieldDifference("bathrooms", payload["bathrooms"], theirs)
    count = payload.get("number_of_bathrooms")
    if _holds_count(count, full, half):
        return None
    return FieldDifference("number_of_bathrooms", count, theirs)


def _holds_count(count: Any, full: Any, half: Any) -> bool:
    if not is_number(count):
        return count is None and not full and not half
    if not (is_number(full) and is_number(half)):
        return False
    if same(float(full) + float(half) / 2, count):
        return True
    # A fraction other than a half (1.25) can only be shown as one half bathroom.
    whole = math.floor(float(count))
    return whole != float(count) and same(full, whole) and same(half, 1)
