"""Canonical listing → Travtus sync listing object (contract section 3)."""

from __future__ import annotations

from typing import Any

SQFT_PER_SQM = 10.7639
LEASE_MONTHS = 12  # Travtus only knows lease terms; a CRM price is a 12-month rent

DIRECT = {
    "external_ref": "external_reference",
    "property_subtype": "unit_type",
    "bedrooms": "bedrooms",
    "bathrooms": "number_of_bathrooms",
    "description": "description",
    "photos": "image_urls",
    "listing_url": "listing_url",
    "available_from": "move_in_date",
    "amenities": "amenities",
    "features": "features",
    "furnished": "is_furnished",
}
ADDRESS = {
    "line1": "address_line_1",
    "line2": "address_line_2",
    "building_name": "building_name",
    "city": "city",
    "state": "state",
    "postal_code": "postal_code",
    "country": "country",
    "lat": "latitude",
    "lng": "longitude",
}


def include_in_sync(canonical: dict[str, Any]) -> bool:
    """Travtus has no hidden state: a hidden listing is simply not in the group."""
    return (canonical.get("status") or "active") != "hidden"


def map_listing(canonical: dict[str, Any], target_name: str) -> dict[str, Any]:
    out: dict[str, Any] = {dst: canonical[src] for src, dst in DIRECT.items()
                           if canonical.get(src) is not None}
    if canonical.get("area_sqm") is not None:
        out["sqft"] = round(float(canonical["area_sqm"]) * SQFT_PER_SQM, 1)
    address = canonical.get("address")
    if address:
        out["address"] = {dst: address[src] for src, dst in ADDRESS.items()
                          if address.get(src) is not None}
    term = _lease_term(canonical)
    if term:
        out["lease_terms"] = [term]
    out.update((canonical.get("extra") or {}).get(target_name) or {})
    return out


def _lease_term(canonical: dict[str, Any]) -> dict[str, Any] | None:
    rent = (canonical.get("price") or {}).get("amount")
    deposit = canonical.get("deposit")
    if rent is None and deposit is None:
        return None
    term: dict[str, Any] = {"length_in_months": LEASE_MONTHS}
    if rent is not None:
        term["rent"] = rent
    if deposit is not None:
        term["deposit"] = deposit
    return term
