"""Canonical → Rentix payload, deletion payloads and local validation."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.portals import PortalAdapter, RentixAdapter, build_adapter
from bridge.portals.rentix_mapping import external_file_id
from tests.support.canonical import FULL, PHOTOS, listing


@pytest.fixture
def rentix() -> RentixAdapter:
    return RentixAdapter("rentix", "http://127.0.0.1:9/rentix/api/v1", "k")


def test_maps_every_field_of_a_full_listing(rentix: RentixAdapter) -> None:
    assert rentix.map_listing(FULL) == {
        "externalId": "apt-001",
        "announcementStatus": "active",
        "announcementType": "rent",
        "propertyType": "residential",
        "propertySecondaryType": "apartment",  # studio_apartment has no Rentix subtype
        "announcementValue": 550,
        "announcementCurrency": "EUR",
        "announcementPayPeriod": "monthly",
        "propertyQuantitySize": "custom-value",
        "propertyQuantitySizeValue": 2,
        "propertyArea": 65,
        "propertyFloorNumber": 3,
        "propertyFloorsTotal": 9,
        "propertyCoordinates": {"lat": 47.0245, "lng": 28.8322},
        "announcementDescription": FULL["description"],
        "files": [{"url": u, "externalFileId": external_file_id(u)} for u in PHOTOS],
        "propertyVisualState": "euro-renovation",  # extra["rentix"]
    }
    assert rentix.validate(rentix.map_listing(FULL)) == []


def test_address_string_when_coordinates_are_incomplete(rentix: RentixAdapter) -> None:
    address = {"line1": "str. Columna 81/1", "line2": "ap. 12", "city": "Chișinău", "lat": 47.0}
    out = rentix.map_listing(listing(address=address))
    assert out["propertyAddress"] == "Chișinău, str. Columna 81/1, ap. 12"
    assert "propertyCoordinates" not in out
    no_line2 = rentix.map_listing(listing(address={"line1": "str. X 1", "city": "Bălți"}))
    assert no_line2["propertyAddress"] == "Bălți, str. X 1"


def test_sale_has_no_pay_period_and_hidden_status_maps(rentix: RentixAdapter) -> None:
    out = rentix.map_listing(listing(deal_type="sale", status="hidden",
                                     property_subtype="house"))
    assert "announcementPayPeriod" not in out
    assert out["announcementStatus"] == "hidden"
    assert out["propertySecondaryType"] == "house"


def test_omits_fields_the_listing_does_not_have(rentix: RentixAdapter) -> None:
    out = rentix.map_listing({"external_ref": "bare"})
    assert out == {"externalId": "bare", "announcementStatus": "active"}


def test_extra_for_another_target_is_ignored_and_own_extra_wins(rentix: RentixAdapter) -> None:
    out = rentix.map_listing(listing(extra={"rentix": {"announcementValue": 600},
                                            "travtus": {"finish": "gold"}}))
    assert out["announcementValue"] == 600
    assert "finish" not in out


def test_external_file_ids_are_stable_and_distinct() -> None:
    assert external_file_id(PHOTOS[0]) == external_file_id(PHOTOS[0])
    assert len({external_file_id(u) for u in PHOTOS}) == len(PHOTOS)


def test_deletion_payloads(rentix: RentixAdapter) -> None:
    assert rentix.deletion_payload("apt-001") == {"externalId": "apt-001",
                                                  "announcementStatus": "hidden"}
    assert rentix.deletion_payload("apt-001", "delete") == {"op": "delete",
                                                            "externalId": "apt-001"}
    assert rentix.deletion_payload("apt-001", "none") is None
    with pytest.raises(ValueError):
        rentix.deletion_payload("apt-001", "shred")  # type: ignore[arg-type]


def test_factory_builds_both_kinds_and_rejects_unknown_settings() -> None:
    r = build_adapter("rentix", name="r", base_url="http://x", api_key="k")
    t = build_adapter("travtus", name="t", base_url="http://x", token_url="http://x/t",
                      client_id="c", client_secret="s")
    assert (r.kind, t.kind) == ("rentix", "travtus")
    assert isinstance(r, PortalAdapter) and isinstance(t, PortalAdapter)
    with pytest.raises(TypeError):
        build_adapter("rentix", name="r", base_url="http://x", api_key="k", apikey="typo")
    with pytest.raises(ValueError):
        build_adapter("zillow", name="z")


VALID = RentixAdapter("r", "http://x", "k").map_listing(FULL)


def with_(**changes: Any) -> dict[str, Any]:
    out = dict(VALID)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(("payload", "field", "fragment"), [
    (with_(externalId=None), "externalId", "externalId"),
    (with_(externalId="x" * 256), "externalId", "255"),
    (with_(announcementStatus="published"), "announcementStatus", "must be one of"),
    (with_(announcementType="lease"), "announcementType", "must be one of"),
    (with_(propertyType="land"), "propertyType",
     "propertyType must be one of: residential, commercial, parking"),
    (with_(propertySecondaryType="office"), "propertySecondaryType", "must be one of"),
    (with_(propertySecondaryType="residential-land"), "propertySecondaryType", "one of"),
    (with_(announcementCurrency="GBP"), "announcementCurrency", "EUR, USD, MDL"),
    (with_(announcementPayPeriod="weekly"), "announcementPayPeriod", "daily, monthly"),
    (with_(announcementDescription="too short"), "announcementDescription", "40"),
    (with_(announcementDescription="x" * 2001), "announcementDescription", "2000"),
    (with_(announcementValue=-1), "announcementValue", "not less than 0"),
    (with_(propertyArea="65"), "propertyArea", "number"),
    (with_(propertyFloorNumber=3.5), "propertyFloorNumber", "integer"),
    (with_(propertyFloorsTotal="9"), "propertyFloorsTotal", "integer"),
    (with_(propertyQuantitySizeValue=2.5), "propertyQuantitySizeValue", "integer"),
    (with_(propertyCoordinates={"lat": 91, "lng": 0}), "propertyCoordinates", "lat"),
    (with_(propertyCoordinates={"lat": 0, "lng": 181}), "propertyCoordinates", "lng"),
    (with_(files=[{"url": f"https://x/{i}"} for i in range(21)]), "files", "20"),
    (with_(files=[{"caption": "x"}] * 3), "files", "url, id or externalFileId"),
    # publishing needs the required fields, a location and at least 3 photos
    (with_(announcementValue=None), "announcementValue", "should not be empty"),
    (with_(announcementCurrency=None), "announcementCurrency", "should not be empty"),
    (with_(propertyType=None), "propertyType", "should not be empty"),
    (with_(announcementType=None), "announcementType", "should not be empty"),
    (with_(propertySecondaryType=None), "propertySecondaryType", "should not be empty"),
    (with_(propertyCoordinates=None), "propertyCoordinates",
     "propertyCoordinates or propertyAddress must be provided"),
    (with_(files=VALID["files"][:2]), "files", "at least 3 photos"),
])
def test_rentix_rules(payload: dict[str, Any], field: str, fragment: str) -> None:
    problems = RentixAdapter("r", "http://x", "k").validate(payload)
    assert [p.field for p in problems] == [field], problems
    assert fragment in problems[0].message
    assert problems[0].error_type == "validation_failed"
    assert problems[0].listing_ref == payload.get("externalId")


def test_land_is_allowed_for_sale_only() -> None:
    rentix = RentixAdapter("r", "http://x", "k")
    sale = with_(announcementType="sale", propertySecondaryType="residential-land")
    sale.pop("announcementPayPeriod")
    assert rentix.validate(sale) == []


@pytest.mark.parametrize("status", ["hidden", "draft"])
def test_hidden_and_draft_may_be_incomplete(status: str) -> None:
    rentix = RentixAdapter("r", "http://x", "k")
    assert rentix.validate({"externalId": "x", "announcementStatus": status}) == []


def test_address_string_is_a_location() -> None:
    payload = with_(propertyCoordinates=None, propertyAddress="Chișinău, str. Columna 81/1")
    assert RentixAdapter("r", "http://x", "k").validate(payload) == []


async def test_upsert_refuses_locally_invalid_payload_without_sending() -> None:
    rentix = RentixAdapter("r", "http://127.0.0.1:9", "k")  # nothing listens on port 9
    result = await rentix.upsert(with_(files=[]))
    assert (result.outcome, result.status, result.field) == ("data_invalid", None, "files")
    assert result.listing_ref == "apt-001"
    await rentix.aclose()
