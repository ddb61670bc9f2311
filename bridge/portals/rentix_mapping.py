"""Canonical listing → Rentix `PUT /listings` payload (contract section 3)."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

DeletionBehaviour = Literal["hidden", "delete", "none"]

# Rentix has no studio subtype: a studio is an apartment there.
SUBTYPE_ALIASES = {"studio_apartment": "apartment"}
PAY_PERIODS = {"month": "monthly", "monthly": "monthly", "day": "daily", "daily": "daily"}

# canonical field → Rentix field, for fields that copy straight across
DIRECT = {
    "deal_type": "announcementType",
    "property_type": "propertyType",
    "area_sqm": "propertyArea",
    "floor": "propertyFloorNumber",
    "floors_total": "propertyFloorsTotal",
    "description": "announcementDescription",
}


def external_file_id(url: str) -> str:
    """Stable per URL, so re-sending a photo reuses the file Rentix already downloaded."""
    return "url-" + hashlib.sha256(url.encode()).hexdigest()[:32]


def map_listing(canonical: dict[str, Any], target_name: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "externalId": canonical["external_ref"],
        "announcementStatus": canonical.get("status") or "active",
    }
    for src, dst in DIRECT.items():
        if canonical.get(src) is not None:
            out[dst] = canonical[src]
    subtype = canonical.get("property_subtype")
    if subtype is not None:
        out["propertySecondaryType"] = SUBTYPE_ALIASES.get(subtype, subtype)
    out.update(_price(canonical))
    if canonical.get("rooms") is not None:
        out["propertyQuantitySize"] = "custom-value"
        out["propertyQuantitySizeValue"] = canonical["rooms"]
    out.update(_location(canonical.get("address")))
    if canonical.get("photos") is not None:
        out["files"] = [{"url": u, "externalFileId": external_file_id(u)}
                        for u in canonical["photos"]]
    out.update((canonical.get("extra") or {}).get(target_name) or {})
    return out


def _price(canonical: dict[str, Any]) -> dict[str, Any]:
    price = canonical.get("price") or {}
    out: dict[str, Any] = {}
    if price.get("amount") is not None:
        out["announcementValue"] = price["amount"]
    if price.get("currency"):
        out["announcementCurrency"] = str(price["currency"]).upper()
    # A pay period only means something for rent; Rentix has no use for it on a sale.
    if price.get("period") and canonical.get("deal_type") == "rent":
        period = str(price["period"])
        out["announcementPayPeriod"] = PAY_PERIODS.get(period, period)
    return out


def _location(address: dict[str, Any] | None) -> dict[str, Any]:
    """Coordinates are Rentix's preferred location; the address string is the fallback."""
    if not address:
        return {}
    if address.get("lat") is not None and address.get("lng") is not None:
        return {"propertyCoordinates": {"lat": address["lat"], "lng": address["lng"]}}
    parts = [address.get(k) for k in ("city", "line1", "line2")]
    text = ", ".join(str(p) for p in parts if p)
    return {"propertyAddress": text} if text else {}


def deletion_payload(external_ref: str, behaviour: DeletionBehaviour = "hidden"
                     ) -> dict[str, Any] | None:
    """What to send for a CRM deletion: an upsert payload, a bulk operation, or nothing."""
    if behaviour == "hidden":  # the continuous-sync guide's advice: take it off the site
        return {"externalId": external_ref, "announcementStatus": "hidden"}
    if behaviour == "delete":
        return {"op": "delete", "externalId": external_ref}
    if behaviour == "none":
        return None
    raise ValueError(f"unknown deletion behaviour {behaviour!r}")
