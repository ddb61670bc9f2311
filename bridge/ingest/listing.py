"""The canonical listing (contract section 3): the target-neutral shape events carry.

The pydantic models define it: what is accepted (with their lax coercions) and, field by field,
why not. The msgspec Structs at the end decode the usual case fast (see bridge/ingest/events.py).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

Text = Field(min_length=1, max_length=2000)

# A listing's version (contract section 2): the fold compares versions as Lua numbers, doubles,
# which hold every integer up to 2^53 - 1 exactly and no larger one.
MAX_VERSION = 2**53 - 1
VERSION_RANGE = f"a whole number from 0 to {MAX_VERSION} (2^53 - 1)"


def _version_in_range(value: Any) -> Any:
    """A JSON integer in range, or null: nothing coerced, so what orders events is what the
    CRM wrote. Anything else is refused in words an integrator can act on."""
    if value is None or (type(value) is int and 0 <= value <= MAX_VERSION):
        return value
    try:
        shown = json.dumps(value)  # as the CRM wrote it: true, "7", 1e+20
    except (TypeError, ValueError):
        shown = repr(value)
    raise PydanticCustomError(
        "version_range", "Input should be {range}; got {value}",
        {"range": VERSION_RANGE, "value": shown if len(shown) <= 40 else shown[:37] + "..."})


VersionField = Annotated[int | None, BeforeValidator(_version_in_range)]

# The error type of a non-finite number inside ``extra`` (pydantic's own for typed fields); its
# context's ``extra_path`` is the path below ``extra`` (keys and list indices), which the event
# parser adds to the field it names.
NON_FINITE = "finite_number"


class _Model(BaseModel):
    # Unknown fields are ignored rather than refused: a CRM that adds a field must not stop
    # every event. Known fields are typed strictly enough to catch real mistakes.
    # A number JSON cannot hold as a finite float (1e400, NaN, Infinity) is refused: it would be
    # stored as null and reach the portals as a missing value.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, allow_inf_nan=False)


class Price(_Model):
    amount: float = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    period: Literal["monthly", "daily", "weekly", "yearly", "once"] | None = None


class Address(_Model):
    line1: str | None = Field(None, max_length=255)
    line2: str | None = Field(None, max_length=255)
    building_name: str | None = Field(None, max_length=255)
    city: str | None = Field(None, max_length=255)
    state: str | None = Field(None, max_length=255)
    postal_code: str | None = Field(None, max_length=32)
    country: str | None = Field(None, max_length=255)
    lat: float | None = Field(None, ge=-90, le=90)
    lng: float | None = Field(None, ge=-180, le=180)


class Listing(_Model):
    external_ref: str = Field(min_length=1, max_length=255)
    version: VersionField = None
    status: Literal["active", "hidden"] = "active"
    deal_type: Literal["rent", "sale"] | None = None
    property_type: Literal["residential", "commercial", "parking"] | None = None
    property_subtype: str | None = Field(None, min_length=1, max_length=64)
    price: Price | None = None
    deposit: float | None = Field(None, ge=0)
    bedrooms: int | None = Field(None, ge=0)
    bathrooms: float | None = Field(None, ge=0)
    rooms: int | None = Field(None, ge=0)
    area_sqm: float | None = Field(None, gt=0)
    floor: int | None = None
    floors_total: int | None = Field(None, ge=0)
    address: Address | None = None
    description: str | None = Field(None, max_length=20_000)
    photos: list[str] = Field(default_factory=list, max_length=100)
    listing_url: str | None = Field(None, max_length=2000)
    available_from: dt.date | None = None
    amenities: list[str] = Field(default_factory=list)
    features: list[str] = Field(default_factory=list)
    furnished: bool | None = None
    extra: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("extra")
    @classmethod
    def _finite_extra(cls, extra: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # Raw fields are untyped, so the model's own check does not reach them.
        if extra:
            where = non_finite_at(extra)
            if where is not None:
                raise PydanticCustomError(NON_FINITE, "Input should be a finite number",
                                          {"extra_path": tuple(reversed(where))})
        return extra


class ListingRef(_Model):
    """What a ``listing.deleted`` event must carry; other fields are optional and ignored."""

    external_ref: str = Field(min_length=1, max_length=255)
    version: VersionField = None


def non_finite_at(value: Any) -> list[str | int] | None:
    """The path to the first non-finite float in ``value``, innermost step first; None if none.

    Built only on the way out of a find, so a clean value costs one type check per item.
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else []
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        where = non_finite_at(item)
        if where is not None:
            where.append(key)
            return where
    return None


# The hot path ----------------------------------------------------------------------------------
#
# The same shapes as msgspec Structs, for the listings events almost always carry: already
# canonical (typed as the contract says, no whitespace to strip). msgspec decodes and validates
# one in ~3 µs where the models above take ~10 µs, and writes it back as JSON in ~1 µs where
# ``model_dump_json`` takes ~7 µs. A listing the Structs take and ``kept_as_is`` passes, the
# models take too, with the same values, so it is stored byte for byte alike; anything else (a
# string to strip, "3" for 3, a number to coerce, a float JSON would print with an exponent
# sign) is left to the models, which give the same answer and the same field errors as ever.
# Fields absent from the event are UNSET and left out of the stored JSON, as
# ``model_dump_json(exclude_unset=True)`` leaves them. (msgspec's ``pattern`` would check the
# strings too, but at ~0.3 µs each; kept_as_is checks the ~20 of a listing in ~0.8 µs.)

# Floats from 1e16 up are written "1e+16" by pydantic and "1e16" by msgspec: the models take them.
FLOAT_LIMIT = 1e16
Amount = Annotated[float, Meta(ge=0, lt=FLOAT_LIMIT)]
Count = Annotated[int, Meta(ge=0)]
Version = Annotated[int, Meta(ge=0, le=MAX_VERSION)]  # out of range: the models say why
Ref = Annotated[str, Meta(min_length=1, max_length=255)]
Line = Annotated[str, Meta(max_length=255)]
Subtype = Annotated[str, Meta(min_length=1, max_length=64)]


class _Struct(msgspec.Struct, gc=False):
    """Unknown fields are ignored (and not stored), as by the models. ``gc=False``: decoded
    JSON holds no cycles, so the collector need not track these."""


class PriceStruct(_Struct):
    amount: Amount
    currency: Annotated[str, Meta(min_length=3, max_length=3)]  # and [A-Z]: kept_as_is
    period: Literal["monthly", "daily", "weekly", "yearly", "once"] | UnsetType | None = UNSET


class AddressStruct(_Struct):
    line1: Line | UnsetType | None = UNSET
    line2: Line | UnsetType | None = UNSET
    building_name: Line | UnsetType | None = UNSET
    city: Line | UnsetType | None = UNSET
    state: Line | UnsetType | None = UNSET
    postal_code: Annotated[str, Meta(max_length=32)] | UnsetType | None = UNSET
    country: Line | UnsetType | None = UNSET
    lat: Annotated[float, Meta(ge=-90, le=90)] | UnsetType | None = UNSET
    lng: Annotated[float, Meta(ge=-180, le=180)] | UnsetType | None = UNSET


class ListingStruct(_Struct):
    """``Listing``'s fields in its order (the stored JSON keeps it)."""

    external_ref: Ref
    version: Version | UnsetType | None = UNSET
    status: Literal["active", "hidden"] | UnsetType = UNSET
    deal_type: Literal["rent", "sale"] | UnsetType | None = UNSET
    property_type: Literal["residential", "commercial", "parking"] | UnsetType | None = UNSET
    property_subtype: Subtype | UnsetType | None = UNSET
    price: PriceStruct | UnsetType | None = UNSET
    deposit: Amount | UnsetType | None = UNSET
    bedrooms: Count | UnsetType | None = UNSET
    bathrooms: Amount | UnsetType | None = UNSET
    rooms: Count | UnsetType | None = UNSET
    area_sqm: Annotated[float, Meta(gt=0, lt=FLOAT_LIMIT)] | UnsetType | None = UNSET
    floor: int | UnsetType | None = UNSET
    floors_total: Count | UnsetType | None = UNSET
    address: AddressStruct | UnsetType | None = UNSET
    description: Annotated[str, Meta(max_length=20_000)] | UnsetType | None = UNSET
    photos: Annotated[list[str], Meta(max_length=100)] | UnsetType = UNSET
    listing_url: Annotated[str, Meta(max_length=2000)] | UnsetType | None = UNSET
    available_from: dt.date | UnsetType | None = UNSET
    amenities: list[str] | UnsetType = UNSET
    features: list[str] | UnsetType = UNSET
    furnished: bool | UnsetType | None = UNSET
    extra: dict[str, dict[str, Any]] | UnsetType = UNSET


class ListingRefStruct(_Struct):
    external_ref: Ref
    version: Version | UnsetType | None = UNSET


def kept_as_is(listing: ListingStruct | ListingRefStruct) -> bool:
    """Would the model keep this listing's values as they are? No string with whitespace to
    strip at either end (Python's ``str.strip`` removes all that pydantic's does, and more), a
    currency of three capitals, and no float in ``extra`` that JSON prints differently (JSON
    cannot bring a non-finite one here: msgspec refuses 1e400, NaN and Infinity)."""
    # Absent and null fields become "" (nothing to strip); one map compares them all at once.
    texts: list[str] = [listing.external_ref]
    if isinstance(listing, ListingStruct):
        texts += (listing.property_subtype or "", listing.description or "",
                  listing.listing_url or "")
        texts += listing.photos or ()
        texts += listing.amenities or ()
        texts += listing.features or ()
        if address := listing.address:
            texts += (address.line1 or "", address.line2 or "", address.building_name or "",
                      address.city or "", address.state or "", address.postal_code or "",
                      address.country or "")
        if (price := listing.price) and not (price.currency.isascii() and
                                             price.currency.isalpha() and
                                             price.currency.isupper()):
            return False
        if (extra := listing.extra) and not _plain_extra(extra, texts):
            return False
    return list(map(str.strip, texts)) == texts


def _plain_extra(extra: dict[str, dict[str, Any]], keys: list[str]) -> bool:
    """Collect the keys the model strips (two levels); are all floats below FLOAT_LIMIT?"""
    for target, fields in extra.items():
        keys.append(target)
        keys += fields
        if not all(_plain(value) for value in fields.values()):
            return False
    return True


def _plain(value: Any) -> bool:
    if isinstance(value, float):
        return -FLOAT_LIMIT < value < FLOAT_LIMIT
    if isinstance(value, dict):
        return all(_plain(item) for item in value.values())
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    return True
