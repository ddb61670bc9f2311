"""Travtus validation rules and read shapes, from the reference and the interpretations page."""

from __future__ import annotations

import re
from datetime import date
from typing import Any, TypeGuard

from .travtus_store import Listing

UNIT_TYPES = ("apartment", "studio_apartment")
DATE_FIELDS = ("active_date", "move_in_date")
ADDRESS_REQUIRED = ("address_line_1", "state", "postal_code")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# The seed document's own wording, where it gives one.
MESSAGES = {
    "missing_authorization": "Your request does not include an 'Authorization' header with a "
    "bearer token for your account.",
    "expired_token": "The bearer token you have provided in the 'Authorization' header has "
    "expired. Please obtain a new one.",
    "invalid_authorization": "The bearer token you have provided in the 'Authorization' header "
    "is invalid.",
    "both_group_identifiers_provided": "You have provided both a group id and group external "
    "reference for the synchronise listings operation. Please only provide one of the two.",
    "no_group_provided": "You have not provided either a group id or a group external reference "
    "for the synchronise listings operation. Please provide one of the two.",
    "no_group_identifier_provided": "You have not provided either a group id or a group external "
    "reference. Please provide one of the two.",
    "both_bathroom_attributes_provided": "You have provided both a number_of_bathrooms and a "
    "bathrooms attribute. Please only provide one of the two.",
    "no_access_to_group": "You do not have access to the synchronise listings operation for the "
    "group you have provided in the request.",
    "no_external_reference": "You have not provided an external reference for a listing. Please "
    "provide one.",
    "date_format_invalid": "You have provided a date in an invalid format. All dates must be "
    "provided in the YYYY-MM-DD format.",
    "missing_unit_type": "You are missing the required unit_type field for a listing. Please add "
    "the field to your listing.",
    "missing_listing_url": "You are missing the required listing_url field for a listing. Please "
    "add the field to your listing.",
    "invalid_unit_type": 'Invalid value for unit_type field on a listing. Please use either '
    '"apartment" or "studio_apartment".',
    "no_bathroom_attributes_provided": "You have provided neither the number_of_bathrooms or the "
    "bathrooms attribute. Please provide one of the two.",
    "invalid_number_of_bathrooms": "You have not provided a bathroom attribute and set the "
    "number_of_bathrooms to less than 1. Please provide the bathrooms attribute or set the "
    "number_of_bathrooms to a number greater than 0.",
    "invalid_address": "A listing address must include address_line_1, state and postal_code.",
    "missing_or_invalid_unit_type": 'The unit_type field is missing or invalid. Please use either '
    '"apartment" or "studio_apartment".',
    "no_listing_url": "You are missing the required listing_url field for the listing.",
    "not_authorized": "You are not authorized to delete this listing.",
    "not_found": "No listings match your request.",
    "invalid_request": "The request is malformed.",
    "invalid_client": "The client credentials are invalid.",
    "idempotency_key_reused": "This Idempotency-Key was used with a different request body.",
    "idempotency_key_in_use": "A request with this Idempotency-Key is still being processed.",
    "rate_limited": "Too many requests. Please retry later with exponential backoff.",
}

# The HTTP status each sync rule's error type is documented with.
SYNC_STATUS = {
    "no_external_reference": 401, "both_bathroom_attributes_provided": 400,
    "no_bathroom_attributes_provided": 401, "invalid_number_of_bathrooms": 401,
    "missing_unit_type": 401, "invalid_unit_type": 401, "missing_listing_url": 401,
    "date_format_invalid": 401, "invalid_address": 400,
}


def is_date(value: Any) -> TypeGuard[str]:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _present(listing: dict[str, Any], name: str) -> bool:
    return listing.get(name) is not None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def sync_listing_error(listing: dict[str, Any]) -> str | None:
    """The first rule a sync listing breaks (the interpretations page's order), if any."""
    ref = listing.get("external_reference")
    if not isinstance(ref, str) or not ref.strip():
        return "no_external_reference"
    has_count, has_list = _present(listing, "number_of_bathrooms"), _present(listing, "bathrooms")
    if has_count and has_list:
        return "both_bathroom_attributes_provided"
    if not has_count and not has_list:
        return "no_bathroom_attributes_provided"
    count = listing.get("number_of_bathrooms")
    if has_count and (isinstance(count, bool) or not isinstance(count, int | float) or count < 1):
        return "invalid_number_of_bathrooms"
    if _blank(listing.get("unit_type")):
        return "missing_unit_type"
    if listing["unit_type"] not in UNIT_TYPES:
        return "invalid_unit_type"
    if _blank(listing.get("listing_url")):
        return "missing_listing_url"
    if any(_present(listing, f) and not is_date(listing[f]) for f in DATE_FIELDS):
        return "date_format_invalid"
    return _address_error(listing.get("address"))


def _address_error(address: Any) -> str | None:
    if address is None:
        return None
    if not isinstance(address, dict) or any(_blank(address.get(f)) for f in ADDRESS_REQUIRED):
        return "invalid_address"
    return None


def single_listing_error(listing: dict[str, Any]) -> str | None:
    """POST /listing/ checks after the group: unit_type, then listing_url."""
    if listing.get("unit_type") not in UNIT_TYPES:
        return "missing_or_invalid_unit_type"
    if _blank(listing.get("listing_url")):
        return "no_listing_url"
    return None


# -- read shapes ---------------------------------------------------------------------------------

def _bathroom_counts(fields: dict[str, Any]) -> tuple[int | None, int | None]:
    rooms = fields.get("bathrooms")
    if isinstance(rooms, list):
        full = sum(1 for r in rooms if isinstance(r, dict) and r.get("has_shower_or_bath"))
        return full, len(rooms) - full
    count = fields.get("number_of_bathrooms")
    if isinstance(count, int | float) and not isinstance(count, bool):
        whole = int(count)
        return whole, 1 if count - whole >= 0.5 else 0
    return None, None


def _twelve_month(fields: dict[str, Any], name: str) -> float | None:
    for term in fields.get("lease_terms") or []:
        if isinstance(term, dict) and term.get("length_in_months") == 12:
            return term.get(name)
    return None


def find_view(listing: Listing) -> dict[str, Any]:
    """A listing as POST /listings/find/ returns it (no address, lease_terms or active_date)."""
    f = listing.fields
    full, half = _bathroom_counts(f)
    return {
        "identifier": listing.identifier,
        "external_ref": listing.external_reference,
        "amenities": f.get("amenities") or [],
        "features": f.get("features") or [],
        "finish": f.get("finish"),
        "bedrooms": f.get("bedrooms"),
        "deposit_for_12_month_lease": _twelve_month(f, "deposit"),
        "description": f.get("description"),
        "floorplan_url": f.get("floorplan_url"),
        "full_bathrooms": full,
        "half_bathrooms": half,
        "image_urls": f.get("image_urls") or [],
        "is_flex": f.get("is_flex"),
        "is_furnished": f.get("is_furnished"),
        "move_in_date": f.get("move_in_date"),
        "rent_for_12_month_lease": _twelve_month(f, "rent"),
        "sqft": f.get("sqft"),
        "tour_url": f.get("tour_url"),
        "unit_id": listing.unit_id,
        "unit_number": f.get("unit_number"),
        "unit_type": f.get("unit_type"),
        "listing_url": f.get("listing_url"),
    }


def full_view(listing: Listing) -> dict[str, Any]:
    """A listing as POST /listing/ returns it: the find shape plus its parts with identifiers."""
    view = find_view(listing)
    del view["external_ref"]
    f = listing.fields
    view["bathrooms"] = [
        {"identifier": f"{listing.identifier}-bath-{i + 1}", **room}
        for i, room in enumerate(f.get("bathrooms") or []) if isinstance(room, dict)
    ]
    view["lease_terms"] = [
        {"identifier": f"{listing.identifier}-term-{i + 1}", **term}
        for i, term in enumerate(f.get("lease_terms") or []) if isinstance(term, dict)
    ]
    view["active_date"] = f.get("active_date")
    return view


def admin_view(listing: Listing, group_ref: str | None) -> dict[str, Any]:
    """Everything the sandbox holds for a listing, for the admin API."""
    return {
        **listing.fields,
        "identifier": listing.identifier,
        "external_reference": listing.external_reference,
        "group_id": listing.group_id,
        "group_external_ref": group_ref,
        "unit_id": listing.unit_id,
        "inactive_date": listing.inactive_date.isoformat() if listing.inactive_date else None,
    }
