"""Rentix field validation, written from the reference and the interpretations page only."""

from __future__ import annotations

from typing import Any

STATUSES = ("draft", "active", "hidden", "expired", "completed")
PUBLIC = ("active", "expired", "completed", "pending_active")
ANNOUNCEMENT_TYPES = ("rent", "sale")
PROPERTY_TYPES = ("residential", "commercial", "parking")
CURRENCIES = ("EUR", "USD", "MDL")
PAY_PERIODS = ("daily", "monthly")
SUBTYPES = {
    "residential": ("apartment", "house", "room", "residential-land", "other"),
    "commercial": ("office", "trade", "warehouse", "production", "business", "commercial-land",
                   "other"),
    "parking": ("underground-parking", "open-parking", "garage", "covered-parking", "other"),
}
SALE_ONLY = ("residential-land", "commercial-land")
REQUIRED_TO_PUBLISH = ("announcementType", "propertyType", "propertySecondaryType",
                       "announcementValue", "announcementCurrency")
MIN_PHOTOS, MAX_PHOTOS = 3, 20
ENUMS: dict[str, tuple[str, ...]] = {
    "announcementStatus": STATUSES,
    "announcementType": ANNOUNCEMENT_TYPES,
    "propertyType": PROPERTY_TYPES,
    "announcementCurrency": CURRENCIES,
    "announcementPayPeriod": PAY_PERIODS,
}
NUMBERS = ("announcementValue", "propertyArea")
INTEGERS = ("propertyFloorNumber", "propertyFloorsTotal", "propertyQuantitySizeValue", "userId")
STRINGS = ("propertyAddress", "propertyQuantitySize", "propertyHousingMarket",
           "propertyVisualState")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def external_id_errors(value: Any, name: str = "externalId") -> list[str]:
    if value is None:
        return [f"{name} should not be empty", f"{name} must be a string"]
    if not isinstance(value, str):
        return [f"{name} must be a string"]
    if not value:
        return [f"{name} should not be empty"]
    if len(value) > 255:
        return [f"{name} must be shorter than or equal to 255 characters"]
    return []


def field_errors(payload: dict[str, Any], merged: dict[str, Any]) -> list[str]:
    """Format errors of the fields present in `payload`; `merged` gives context for subtypes."""
    errors = external_id_errors(payload.get("externalId"))
    for name, allowed in ENUMS.items():
        if payload.get(name) is not None and payload[name] not in allowed:
            errors.append(f"{name} must be one of: {', '.join(allowed)}")
    for name in NUMBERS:
        value = payload.get(name)
        if value is not None and not is_number(value):
            errors.append(f"{name} must be a number")
        elif value is not None and value < 0:
            errors.append(f"{name} must not be less than 0")
    for name in INTEGERS:
        if payload.get(name) is not None and not is_int(payload[name]):
            errors.append(f"{name} must be an integer number")
    for name in STRINGS:
        if payload.get(name) is not None and not isinstance(payload[name], str):
            errors.append(f"{name} must be a string")
    errors += _subtype_errors(payload, merged)
    errors += _description_errors(payload.get("announcementDescription"))
    errors += _coordinate_errors(payload.get("propertyCoordinates"))
    errors += _file_errors(payload.get("files"))
    if payload.get("fileIds") is not None and not isinstance(payload["fileIds"], list):
        errors.append("fileIds must be an array")
    return errors


def publish_errors(merged: dict[str, Any]) -> list[str]:
    """What a listing whose resulting status is public must have."""
    errors = [f"{name} should not be empty" for name in REQUIRED_TO_PUBLISH
              if merged.get(name) in (None, "")]
    if not merged.get("propertyCoordinates") and not merged.get("propertyAddress"):
        errors.append("propertyCoordinates or propertyAddress must be provided")
    files = merged.get("files")
    if not isinstance(files, list) or len(files) < MIN_PHOTOS:
        errors.append(f"files must contain at least {MIN_PHOTOS} photos to publish")
    return errors


def _subtype_errors(payload: dict[str, Any], merged: dict[str, Any]) -> list[str]:
    subtype = payload.get("propertySecondaryType")
    if subtype is None:
        return []
    kind = merged.get("propertyType")
    allowed: tuple[str, ...]
    if kind in SUBTYPES:
        allowed = SUBTYPES[kind]
    else:  # no valid propertyType to judge against: anything the table knows
        allowed = tuple(dict.fromkeys(s for group in SUBTYPES.values() for s in group))
    if merged.get("announcementType") == "rent":
        allowed = tuple(s for s in allowed if s not in SALE_ONLY)
    if subtype in allowed:
        return []
    return [f"propertySecondaryType must be one of: {', '.join(allowed)}"]


def _description_errors(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str):
        return ["announcementDescription must be a string"]
    if not 40 <= len(value) <= 2000:
        return ["announcementDescription must be between 40 and 2000 characters"]
    return []


def _coordinate_errors(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, dict) or not is_number(value.get("lat")) or not is_number(
        value.get("lng")
    ):
        return ["propertyCoordinates must be an object with numeric lat and lng"]
    errors = []
    if not -90 <= value["lat"] <= 90:
        errors.append("propertyCoordinates.lat must be between -90 and 90")
    if not -180 <= value["lng"] <= 180:
        errors.append("propertyCoordinates.lng must be between -180 and 180")
    return errors


def _file_errors(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        return ["files must be an array"]
    errors = []
    if len(value) > MAX_PHOTOS:
        errors.append(f"files must contain no more than {MAX_PHOTOS} elements")
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not any(
            item.get(k) is not None for k in ("url", "id", "externalFileId")
        ):
            errors.append(f"files.{i} must have url, id or externalFileId")
    return errors
