"""A realistic stream of CRM events, for ``bridge send --generate``, demos and benchmarks."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Any

STREETS = [
    ("str.", "Columna"), ("bd.", "Ștefan cel Mare și Sfânt"), ("str.", "Mihai Eminescu"),
    ("str.", "Alexandru cel Bun"), ("bd.", "Dacia"), ("str.", "Ismail"), ("șos.", "Hîncești"),
    ("str.", "Vasile Alecsandri"), ("bd.", "Mircea cel Bătrân"), ("str.", "Bucuriei"),
]
SUBTYPES = ["apartment", "apartment", "apartment", "studio_apartment"]


class ListingFactory:
    """Makes canonical listings and plausible edits to them, deterministically from a seed."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)

    def listing(self, ref: str, version: int = 1) -> dict[str, Any]:
        rng = self.rng
        kind, street = rng.choice(STREETS)
        rooms = rng.randint(1, 4)
        return {
            "external_ref": ref,
            "version": version,
            "status": "active",
            "deal_type": "rent",
            "property_type": "residential",
            "property_subtype": "studio_apartment" if rooms == 1 else rng.choice(SUBTYPES),
            "price": {"amount": rng.randrange(250, 1500, 10), "currency": "EUR",
                      "period": "monthly"},
            "deposit": rng.randrange(250, 1500, 50),
            "bedrooms": max(rooms - 1, 0),
            "bathrooms": rng.choice([1, 1, 1.5, 2]),
            "rooms": rooms,
            "area_sqm": float(rng.randrange(28, 140)),
            "floor": rng.randint(1, 16),
            "floors_total": 16,
            "address": {
                "line1": f"{kind} {street} {rng.randint(1, 180)}",
                "line2": f"ap. {rng.randint(1, 120)}",
                "city": "Chișinău", "state": "Chișinău",
                "postal_code": f"MD-20{rng.randint(10, 99)}",
                "country": "Moldova",
                "lat": round(47.0 + rng.random() * 0.05, 5),
                "lng": round(28.8 + rng.random() * 0.05, 5),
            },
            "description": "Renovated apartment with a view over the park, close to transport, "
                           "shops and schools; available for a long-term lease.",
            "photos": [f"https://photos.example.com/{ref}/{i}.jpg" for i in range(4)],
            "listing_url": f"https://agency.example.com/listings/{ref}",
            "available_from": "2026-12-01",
            "amenities": rng.sample(["Elevator", "Parking", "Balcony", "Gym"], 2),
            "features": ["Floor heating"] if rng.random() < 0.3 else [],
            "furnished": rng.random() < 0.7,
        }

    def edit(self, listing: dict[str, Any], version: int | None = None) -> dict[str, Any]:
        edited = {**listing, "version": listing["version"] + 1 if version is None else version}
        change = self.rng.choice(["price", "price", "description", "available_from", "furnished"])
        if change == "price":
            edited["price"] = {**listing["price"], "amount": self.rng.randrange(250, 1500, 10)}
        elif change == "description":
            edited["description"] = listing["description"].rstrip(".") + " (updated)."
        elif change == "available_from":
            day = dt.date(2026, 12, 1) + dt.timedelta(days=self.rng.randint(0, 60))
            edited["available_from"] = day.isoformat()
        else:
            edited["furnished"] = not listing.get("furnished", False)
        return edited


def event_stream(
    count: int, groups: int, per_group: int, seed: int = 1, first_version: int = 1
) -> Iterator[dict[str, Any]]:
    """``count`` events over ``groups`` groups of ``per_group`` listings: creates, then edits.
    Event ``n`` carries version ``first_version + n``: a stream that starts above the last
    one's versions is newer throughout, not refused as stale."""
    factory = ListingFactory(seed)
    state: dict[str, tuple[str, dict[str, Any]]] = {}
    refs = [(f"group-{g:03d}", f"lst-{g:03d}-{i:03d}") for g in range(groups)
            for i in range(per_group)]
    start = dt.datetime.now(tz=dt.UTC)
    for n in range(count):
        group, ref = refs[n] if n < len(refs) else factory.rng.choice(refs)
        if ref in state:
            listing = factory.edit(state[ref][1], first_version + n)
            type_ = "listing.updated"
        else:
            listing = factory.listing(ref, first_version + n)
            type_ = "listing.created"
        state[ref] = (group, listing)
        occurred = (start + dt.timedelta(milliseconds=n)).isoformat().replace("+00:00", "Z")
        yield {"type": type_, "occurred_at": occurred, "group": group, "listing": listing}
