"""A test stand-in for the CRM: builds events and posts them signed, over real HTTP."""

from __future__ import annotations

import datetime as dt
import itertools
import time
import uuid
from typing import Any

import httpx
import orjson

from bridge.ingest.signatures import sign

_counter = itertools.count(1)


def listing(ref: str, version: int | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "external_ref": ref,
        "status": "active",
        "deal_type": "rent",
        "property_type": "residential",
        "property_subtype": "apartment",
        "price": {"amount": 500, "currency": "EUR", "period": "monthly"},
        "deposit": 500,
        "bedrooms": 2,
        "bathrooms": 1,
        "rooms": 3,
        "area_sqm": 65,
        "floor": 3,
        "floors_total": 9,
        "address": {"line1": "str. Columna 81", "line2": "ap. 12", "city": "Chisinau",
                    "state": "Chisinau", "postal_code": "MD-2012", "country": "Moldova",
                    "lat": 47.02, "lng": 28.83},
        "description": "Bright two-bedroom apartment near the centre, renovated in 2025.",
        "photos": [f"https://img.example.com/{ref}/{i}.jpg" for i in range(3)],
        "listing_url": f"https://agency.example.com/listings/{ref}",
        "available_from": "2026-12-01",
        "furnished": True,
    }
    if version is not None:
        body["version"] = version
    body.update(fields)
    return body


# Events happen yesterday at 10:15 UTC: a fixed date would one day fall behind the retention
# horizon (30 days by default), and the webhook would refuse every event as stale.
BASE = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).replace(hour=10, minute=15, second=0,
                                                                microsecond=0)


def at(seconds: float = 0) -> str:
    """An occurred_at ``seconds`` after BASE, as the CRM writes it."""
    moment = BASE + dt.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + "Z"


def event(type_: str, group: str, occurred_at: str | None = None,
          **fields: Any) -> dict[str, Any]:
    return {"type": type_, "occurred_at": occurred_at or at(), "group": group, **fields}


def upsert(group: str, ref: str, version: int | None = None, **fields: Any) -> dict[str, Any]:
    return event("listing.updated", group, listing=listing(ref, version, **fields))


def signed_headers(secret: str, body: bytes, msg_id: str | None = None,
                   timestamp: int | None = None, prefix: str = "webhook") -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(timestamp),
        f"{prefix}-signature": sign(secret, msg_id, timestamp, body),
    }


def post(client: httpx.Client, secret: str, payload: Any, msg_id: str | None = None,
         **header_args: Any) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    headers = signed_headers(secret, body, msg_id, **header_args)
    return client.post("/webhooks/crm", content=body, headers=headers)


def hand_made(address: str = "Chișinău, strada Columna 81, ap. 12",
              **form: Any) -> dict[str, Any]:
    """A Rentix listing as an agent made it by hand on the portal (write fields, no externalId)."""
    return {"announcementType": "rent", "propertyType": "residential",
            "propertySecondaryType": "apartment", "announcementValue": 500,
            "announcementCurrency": "EUR", "announcementPayPeriod": "monthly",
            "propertyArea": 65, "propertyQuantitySize": "custom-value",
            "propertyQuantitySizeValue": 3, "propertyFloorNumber": 3,
            "propertyAddress": address, **form}
