"""Travtus's documented listing rules, each reported with Travtus's own error type.

Order follows the portal's check order (docs/portal-interpretations.md) so that the first
Problem is the error the portal itself would answer.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

from bridge.portals.outcomes import Problem

UNIT_TYPES = ("apartment", "studio_apartment")
DATE_FIELDS = ("active_date", "move_in_date")
ADDRESS_REQUIRED = ("address_line_1", "state", "postal_code")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def validate(listing: dict[str, Any]) -> list[Problem]:
    ref = listing.get("external_reference")
    ref = ref if isinstance(ref, str) and ref else None
    found = [*_external_reference(listing), *_bathrooms(listing), *_unit_type(listing),
             *_listing_url(listing), *_dates(listing), *_address(listing)]
    return [Problem(t, m, f, ref) for t, m, f in found]


Found = list[tuple[str, str, str]]  # (error type, message, field)


def _external_reference(p: dict[str, Any]) -> Found:
    if not p.get("external_reference"):
        return [("no_external_reference", "a listing has no external_reference",
                 "external_reference")]
    return []


def _bathrooms(p: dict[str, Any]) -> Found:
    has_number = p.get("number_of_bathrooms") is not None
    has_list = p.get("bathrooms") is not None
    if has_number and has_list:
        return [("both_bathroom_attributes_provided",
                 "number_of_bathrooms and bathrooms are both set", "number_of_bathrooms")]
    if not has_number and not has_list:
        return [("no_bathroom_attributes_provided",
                 "neither number_of_bathrooms nor bathrooms is set", "number_of_bathrooms")]
    n = p.get("number_of_bathrooms")
    if has_number and (isinstance(n, bool) or not isinstance(n, int | float | Decimal) or n < 1):
        return [("invalid_number_of_bathrooms", "number_of_bathrooms must be at least 1",
                 "number_of_bathrooms")]
    return []


def _unit_type(p: dict[str, Any]) -> Found:
    if p.get("unit_type") in (None, ""):
        return [("missing_unit_type", "unit_type is required", "unit_type")]
    if p["unit_type"] not in UNIT_TYPES:
        return [("invalid_unit_type",
                 f"unit_type {p['unit_type']!r} is not apartment or studio_apartment",
                 "unit_type")]
    return []


def _listing_url(p: dict[str, Any]) -> Found:
    if not p.get("listing_url"):
        return [("missing_listing_url", "listing_url is required", "listing_url")]
    return []


def is_date(value: Any) -> bool:
    """A real calendar date written exactly YYYY-MM-DD."""
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _dates(p: dict[str, Any]) -> Found:
    return [("date_format_invalid", f"{f} must be a YYYY-MM-DD date", f)
            for f in DATE_FIELDS if f in p and p[f] is not None and not is_date(p[f])]


def _address(p: dict[str, Any]) -> Found:
    address = p.get("address")
    if address is None:
        return []
    if not isinstance(address, dict):
        return [("invalid_address", "address must be an object", "address")]
    return [("invalid_address", f"address.{f} is required", f"address.{f}")
            for f in ADDRESS_REQUIRED if not address.get(f)]
