"""The canonical listing (contract section 3): the target-neutral shape events carry."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

Text = Field(min_length=1, max_length=2000)

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
    version: int | None = Field(None, ge=0)
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
    version: int | None = Field(None, ge=0)


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
