"""Rentix's documented field rules (docs/portal-interpretations.md), checked before sending.

Messages follow Rentix's style: each starts with the field name, as in
`propertyType must be one of: residential, commercial, parking`.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bridge.portals.outcomes import Problem

VALIDATION = "validation_failed"  # Rentix's 400 with an array of field messages

STATUSES = ("draft", "active", "hidden", "expired", "completed")
PUBLIC_STATUSES = frozenset({"active", "expired", "completed"})
DEAL_TYPES = ("rent", "sale")
PROPERTY_TYPES = ("residential", "commercial", "parking")
CURRENCIES = ("EUR", "USD", "MDL")
PAY_PERIODS = ("daily", "monthly")
SUBTYPES: dict[str, tuple[str, ...]] = {
    "residential": ("apartment", "house", "room", "residential-land", "other"),
    "commercial": ("office", "trade", "warehouse", "production", "business",
                   "commercial-land", "other"),
    "parking": ("underground-parking", "open-parking", "garage", "covered-parking", "other"),
}
SALE_ONLY_SUBTYPES = frozenset({"residential-land", "commercial-land"})
REQUIRED_TO_PUBLISH = ("announcementType", "propertyType", "propertySecondaryType",
                       "announcementValue", "announcementCurrency")
MIN_PHOTOS_TO_PUBLISH = 3
MAX_PHOTOS = 20
DESCRIPTION_RANGE = (40, 2000)


def validate(payload: dict[str, Any]) -> list[Problem]:
    ref = payload.get("externalId") if isinstance(payload.get("externalId"), str) else None
    messages: list[tuple[str, str]] = []
    for check in FIELD_CHECKS:
        messages.extend(check(payload))
    if payload.get("announcementStatus") in PUBLIC_STATUSES:
        messages.extend(_publishable(payload))
    return [Problem(VALIDATION, msg, field, ref) for field, msg in messages]


Found = list[tuple[str, str]]  # (field, message)


def _external_id(p: dict[str, Any]) -> Found:
    value = p.get("externalId")
    if not isinstance(value, str) or not 1 <= len(value) <= 255:
        return [("externalId", "externalId must be a string of 1 to 255 characters")]
    return []


def _enum(field: str, allowed: tuple[str, ...]) -> Callable[[dict[str, Any]], Found]:
    def check(p: dict[str, Any]) -> Found:
        if field in p and p[field] not in allowed:
            return [(field, f"{field} must be one of: {', '.join(allowed)}")]
        return []
    return check


def _subtype(p: dict[str, Any]) -> Found:
    field, value = "propertySecondaryType", p.get("propertySecondaryType")
    if "propertySecondaryType" not in p:
        return []
    ptype = p.get("propertyType")
    allowed = SUBTYPES.get(ptype) if isinstance(ptype, str) else None
    if allowed is None:  # type unknown here: accept any documented subtype
        allowed = tuple(dict.fromkeys(s for subs in SUBTYPES.values() for s in subs))
    if p.get("announcementType") == "rent":
        allowed = tuple(s for s in allowed if s not in SALE_ONLY_SUBTYPES)
    if value not in allowed:
        return [(field, f"{field} must be one of: {', '.join(allowed)}")]
    return []


def _description(p: dict[str, Any]) -> Found:
    field = "announcementDescription"
    if field not in p:
        return []
    lo, hi = DESCRIPTION_RANGE
    value = p[field]
    if not isinstance(value, str) or not lo <= len(value) <= hi:
        return [(field, f"{field} must be between {lo} and {hi} characters")]
    return []


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | Decimal) and not isinstance(v, bool)


def _non_negative(field: str) -> Callable[[dict[str, Any]], Found]:
    def check(p: dict[str, Any]) -> Found:
        if field in p and not (_is_number(p[field]) and p[field] >= 0):
            return [(field, f"{field} must be a number not less than 0")]
        return []
    return check


def _integer(field: str) -> Callable[[dict[str, Any]], Found]:
    def check(p: dict[str, Any]) -> Found:
        if field in p and (not isinstance(p[field], int) or isinstance(p[field], bool)):
            return [(field, f"{field} must be an integer number")]
        return []
    return check


def _coordinates(p: dict[str, Any]) -> Found:
    field = "propertyCoordinates"
    if field not in p:
        return []
    value = p[field]
    ok = (isinstance(value, dict) and _is_number(value.get("lat")) and _is_number(value.get("lng"))
          and -90 <= value["lat"] <= 90 and -180 <= value["lng"] <= 180)
    return [] if ok else [(field, f"{field} must have lat in [-90, 90] and lng in [-180, 180]")]


def _files(p: dict[str, Any]) -> Found:
    if "files" not in p:
        return []
    files = p["files"]
    if not isinstance(files, list):
        return [("files", "files must be an array")]
    found: Found = []
    if len(files) > MAX_PHOTOS:
        found.append(("files", f"files must contain no more than {MAX_PHOTOS} elements"))
    if any(not isinstance(f, dict) or not ({"url", "id", "externalFileId"} & f.keys())
           for f in files):
        found.append(("files", "files each item must have url, id or externalFileId"))
    return found


def _publishable(p: dict[str, Any]) -> Found:
    """Checked only for a public status: drafts and hidden listings may be incomplete."""
    found: Found = [(f, f"{f} should not be empty") for f in REQUIRED_TO_PUBLISH
                    if p.get(f) in (None, "")]
    if not p.get("propertyCoordinates") and not p.get("propertyAddress"):
        found.append(("propertyCoordinates",
                      "propertyCoordinates or propertyAddress must be provided"))
    files = p.get("files")
    if not isinstance(files, list) or len(files) < MIN_PHOTOS_TO_PUBLISH:
        found.append(("files", f"files must contain at least {MIN_PHOTOS_TO_PUBLISH} photos "
                               "to publish"))
    return found


FIELD_CHECKS: tuple[Callable[[dict[str, Any]], Found], ...] = (
    _external_id,
    _enum("announcementStatus", STATUSES),
    _enum("announcementType", DEAL_TYPES),
    _enum("propertyType", PROPERTY_TYPES),
    _subtype,
    _enum("announcementCurrency", CURRENCIES),
    _enum("announcementPayPeriod", PAY_PERIODS),
    _description,
    _non_negative("announcementValue"),
    _non_negative("propertyArea"),
    _integer("propertyFloorNumber"),
    _integer("propertyFloorsTotal"),
    _integer("propertyQuantitySizeValue"),
    _coordinates,
    _files,
)
