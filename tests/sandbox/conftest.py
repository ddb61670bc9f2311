"""A real sandbox on loopback, reset before every test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bridge.sandbox import SandboxSettings, create_app
from tests.support.servers import serve_app

RENTIX = "/rentix/api/v1"
KEY = {"Authorization": "ApiKey sandbox"}


def publishable(external_id: str, **extra: Any) -> dict[str, Any]:
    """A Rentix listing that passes the public-status checks."""
    return {
        "externalId": external_id, "announcementStatus": "active", "announcementType": "rent",
        "propertyType": "residential", "propertySecondaryType": "apartment",
        "announcementValue": 550, "announcementCurrency": "EUR", "announcementPayPeriod": "monthly",
        "propertyAddress": "Chișinău, str. Columna 81/1",
        "files": [{"url": f"https://img.example/{external_id}/{i}.jpg"} for i in range(3)],
        **extra,
    }


def sync_listing(ref: str, **extra: Any) -> dict[str, Any]:
    """A Travtus sync listing that passes every documented rule."""
    return {"external_reference": ref, "unit_type": "apartment",
            "listing_url": f"https://crm.example/{ref}", "number_of_bathrooms": 1, **extra}


def token(client: httpx.Client, client_id: str = "sandbox", secret: str = "sandbox") -> str:
    r = client.post("/travtus/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def bearer(client: httpx.Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(client)}"}


@pytest.fixture(scope="session")
def base_url() -> Iterator[str]:
    with serve_app(create_app(SandboxSettings())) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as c:
        assert c.post("/_sandbox/reset").status_code == 200
        yield c
