"""Canonical → Travtus sync listing, and every documented Travtus rule checked locally."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.portals import TravtusAdapter
from tests.support.canonical import FULL, PHOTOS, listing

TRAVTUS = TravtusAdapter("travtus", "http://127.0.0.1:9/travtus", "http://127.0.0.1:9/t",
                         "id", "secret")


def test_maps_every_field_of_a_full_listing() -> None:
    assert TRAVTUS.map_listing(FULL) == {
        "external_reference": "apt-001",
        "unit_type": "studio_apartment",
        "bedrooms": 1,
        "number_of_bathrooms": 1.5,
        "sqft": 699.7,  # 65 m2 * 10.7639
        "address": {
            "address_line_1": "str. Columna 81/1", "address_line_2": "ap. 12",
            "building_name": "Columna Tower", "city": "Chișinău", "state": "Chișinău",
            "postal_code": "MD-2012", "country": "Moldova",
            "latitude": 47.0245, "longitude": 28.8322,
        },
        "description": FULL["description"],
        "image_urls": PHOTOS,
        "listing_url": "https://agency.example.com/listings/apt-001",
        "move_in_date": "2026-12-01",
        "amenities": ["Gym", "Swimming Pool"],
        "features": ["Floor heating"],
        "is_furnished": True,
        "lease_terms": [{"rent": 550, "deposit": 1100, "length_in_months": 12}],
        "finish": "gold",  # extra["travtus"]
    }
    assert TRAVTUS.validate(TRAVTUS.map_listing(FULL)) == []


def test_omits_fields_the_listing_does_not_have() -> None:
    assert TRAVTUS.map_listing({"external_ref": "bare"}) == {"external_reference": "bare"}
    out = TRAVTUS.map_listing(listing(deposit=None, address={"line1": "1 Main St"}))
    assert out["lease_terms"] == [{"rent": 550, "length_in_months": 12}]
    assert out["address"] == {"address_line_1": "1 Main St"}


def test_hidden_listings_are_left_out_of_the_group() -> None:
    group = [listing(), listing(external_ref="apt-002", status="hidden"),
             listing(external_ref="apt-003", status=None)]
    assert [TRAVTUS.include_in_sync(c) for c in group] == [True, False, True]
    assert [x["external_reference"] for x in TRAVTUS.map_group(group)] == ["apt-001", "apt-003"]


def test_extra_of_own_target_wins() -> None:
    out = TRAVTUS.map_listing(listing(extra={"travtus": {"unit_type": "apartment"}}))
    assert out["unit_type"] == "apartment"


VALID = TRAVTUS.map_listing(FULL)


def with_(**changes: Any) -> dict[str, Any]:
    out = {k: v for k, v in VALID.items()}
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


BATH = [{"has_shower_or_bath": True, "has_sink": True, "has_toilet": True}]


@pytest.mark.parametrize(("payload", "error_type", "field"), [
    (with_(external_reference=None), "no_external_reference", "external_reference"),
    (with_(external_reference=""), "no_external_reference", "external_reference"),
    (with_(bathrooms=BATH), "both_bathroom_attributes_provided", "number_of_bathrooms"),
    (with_(number_of_bathrooms=None), "no_bathroom_attributes_provided", "number_of_bathrooms"),
    (with_(number_of_bathrooms=0.5), "invalid_number_of_bathrooms", "number_of_bathrooms"),
    (with_(number_of_bathrooms=0), "invalid_number_of_bathrooms", "number_of_bathrooms"),
    (with_(unit_type=None), "missing_unit_type", "unit_type"),
    (with_(unit_type="house"), "invalid_unit_type", "unit_type"),
    (with_(listing_url=None), "missing_listing_url", "listing_url"),
    (with_(listing_url=""), "missing_listing_url", "listing_url"),
    (with_(move_in_date="01/12/2026"), "date_format_invalid", "move_in_date"),
    (with_(move_in_date="2026-02-30"), "date_format_invalid", "move_in_date"),
    (with_(move_in_date="2026-12-1"), "date_format_invalid", "move_in_date"),
    (with_(active_date="2026-12-01T00:00:00"), "date_format_invalid", "active_date"),
    (with_(address={"state": "NY", "postal_code": "10001"}), "invalid_address",
     "address.address_line_1"),
    (with_(address={"address_line_1": "1 Main St", "postal_code": "10001"}), "invalid_address",
     "address.state"),
    (with_(address={"address_line_1": "1 Main St", "state": "NY"}), "invalid_address",
     "address.postal_code"),
])
def test_travtus_rules(payload: dict[str, Any], error_type: str, field: str) -> None:
    problems = TRAVTUS.validate(payload)
    assert [(p.error_type, p.field) for p in problems] == [(error_type, field)]
    expected_ref = payload.get("external_reference") or None
    assert problems[0].listing_ref == expected_ref


def test_bathrooms_list_alone_is_enough() -> None:
    assert TRAVTUS.validate(with_(number_of_bathrooms=None, bathrooms=BATH)) == []


def test_every_broken_rule_is_reported_in_portal_check_order() -> None:
    bad = {"external_reference": "x", "unit_type": "villa", "move_in_date": "tomorrow",
           "address": {}}
    assert [p.error_type for p in TRAVTUS.validate(bad)] == [
        "no_bathroom_attributes_provided", "invalid_unit_type", "missing_listing_url",
        "date_format_invalid", "invalid_address", "invalid_address", "invalid_address"]


async def test_sync_refuses_a_group_with_an_invalid_listing_without_sending() -> None:
    adapter = TravtusAdapter("t", "http://127.0.0.1:9", "http://127.0.0.1:9/t", "i", "s")
    result = await adapter.sync("g", [VALID, with_(external_reference="apt-2", unit_type="loft")])
    assert (result.outcome, result.status, result.error_type) == (
        "data_invalid", None, "invalid_unit_type")
    assert (result.listing_ref, result.field) == ("apt-2", "unit_type")
    assert adapter.tokens.fetches == 0
    await adapter.aclose()
