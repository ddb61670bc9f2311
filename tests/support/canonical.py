"""Canonical listings shared by the portal tests."""

from __future__ import annotations

import copy
from typing import Any

PHOTOS = [f"https://img.example.com/apt-001/{i}.jpg" for i in range(1, 5)]

FULL: dict[str, Any] = {
    "external_ref": "apt-001",
    "version": 7,
    "status": "active",
    "deal_type": "rent",
    "property_type": "residential",
    "property_subtype": "studio_apartment",
    "price": {"amount": 550, "currency": "EUR", "period": "monthly"},
    "deposit": 1100,
    "bedrooms": 1,
    "bathrooms": 1.5,
    "rooms": 2,
    "area_sqm": 65,
    "floor": 3,
    "floors_total": 9,
    "address": {
        "line1": "str. Columna 81/1", "line2": "ap. 12", "building_name": "Columna Tower",
        "city": "Chișinău", "state": "Chișinău", "postal_code": "MD-2012",
        "country": "Moldova", "lat": 47.0245, "lng": 28.8322,
    },
    "description": "Bright studio in the centre, renovated in 2025, close to the park.",
    "photos": PHOTOS,
    "listing_url": "https://agency.example.com/listings/apt-001",
    "available_from": "2026-12-01",
    "amenities": ["Gym", "Swimming Pool"],
    "features": ["Floor heating"],
    "furnished": True,
    "extra": {
        "rentix": {"propertyVisualState": "euro-renovation"},
        "travtus": {"finish": "gold"},
    },
}


def listing(**changes: Any) -> dict[str, Any]:
    """A deep copy of FULL with top-level changes; a value of None removes the field."""
    out = copy.deepcopy(FULL)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out
