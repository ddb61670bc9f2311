"""Read-back: what each portal holds, compared with what the bridge sent, against the sandbox
over HTTP (an independent witness: the comparison is built from the references alone).

Each canonical listing is mapped by its adapter, written (Rentix upsert, Travtus sync), read
back and compared: no difference. Then one field is changed on the portal by hand (a partial
PUT on Rentix, the admin seed on Travtus) and exactly that field is reported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from bridge.portals import Outcome, PortalError, RentixAdapter, TravtusAdapter
from bridge.portals.readback import FieldDifference
from tests.support import canonical, crm
from tests.support.sandbox import Sandbox

PHOTOS = [f"https://img.example.com/other/{i}.jpg" for i in range(4)]
NEW_DESCRIPTION = "Changed by hand on the portal: a quiet flat with a view of the park."

CANONICALS: dict[str, dict[str, Any]] = {
    "crm default": crm.listing("l-crm"),
    "full, studio, extras": canonical.listing(external_ref="l-full"),
    "sale, no pay period": crm.listing("l-sale", deal_type="sale",
                                       price={"amount": 85000, "currency": "EUR"}),
    "address without coordinates": crm.listing(
        "l-addr", address={"line1": "str. Columna 81", "city": "Chisinau", "state": "Chisinau",
                           "postal_code": "MD-2012"}),
    "fractional numbers": crm.listing("l-frac", price={"amount": 512.5, "currency": "EUR",
                                                       "period": "monthly"},
                                      area_sqm=48.3, bathrooms=2.5, deposit=1025.25),
    "no description, no deposit": crm.listing("l-bare", description=None, deposit=None),
    "hidden": crm.listing("l-hidden", status="hidden"),
}


def without_none(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


CANONICALS = {name: without_none(body) for name, body in CANONICALS.items()}


async def rentix_read(rentix: RentixAdapter, ref: str) -> dict[str, Any] | None:
    found = await rentix.get_by_external_id(ref)
    if found.outcome is Outcome.NOT_FOUND:
        return None
    assert found.ok, found
    body: dict[str, Any] = found.body
    return body


async def travtus_read(travtus: TravtusAdapter, group: str) -> dict[str, dict[str, Any]]:
    found = await travtus.find_all(group)
    return {ref: item for item in found if (ref := travtus.portal_ref(item)) is not None}


# -- Rentix --


@pytest.mark.parametrize("name", CANONICALS)
async def test_rentix_holds_what_was_upserted(name: str, rentix: RentixAdapter) -> None:
    payload = rentix.map_listing(CANONICALS[name])
    assert (await rentix.upsert(payload)).ok
    item = await rentix_read(rentix, payload["externalId"])
    assert item is not None and rentix.portal_ref(item) == payload["externalId"]
    assert rentix.held_by_portal(payload, item) == []
    assert rentix.is_hidden(item) is (CANONICALS[name]["status"] == "hidden")


async def test_rentix_every_listing_read_by_paging_holds_its_payload(
        rentix: RentixAdapter) -> None:
    payloads = {c["external_ref"]: rentix.map_listing(c) for c in CANONICALS.values()}
    for payload in payloads.values():
        assert (await rentix.upsert(payload)).ok
    items = {rentix.portal_ref(item): item async for item in rentix.iter_listings(page_size=3)}
    assert set(items) == set(payloads)
    assert {ref: rentix.held_by_portal(p, items[ref]) for ref, p in payloads.items()} == {
        ref: [] for ref in payloads}


@pytest.mark.parametrize(("field", "by_hand", "theirs"), [
    ("announcementValue", 650, 650),
    ("announcementDescription", NEW_DESCRIPTION, NEW_DESCRIPTION),
    ("announcementStatus", "hidden", "hidden"),
    ("propertyArea", None, None),  # cleared by hand
])
async def test_rentix_a_hand_edit_is_reported_as_exactly_that_field(
        field: str, by_hand: Any, theirs: Any, rentix: RentixAdapter) -> None:
    payload = rentix.map_listing(crm.listing("r-1"))
    assert (await rentix.upsert(payload)).ok
    edited = await rentix.upsert({"externalId": "r-1", field: by_hand}, check=False)
    assert edited.ok, edited
    item = await rentix_read(rentix, "r-1")
    assert item is not None
    assert rentix.held_by_portal(payload, item) == [FieldDifference(field, payload[field], theirs)]


async def test_rentix_hidden_by_hand_is_reported_and_seen_hidden(rentix: RentixAdapter) -> None:
    payload = rentix.map_listing(crm.listing("r-1"))
    assert (await rentix.upsert(payload)).ok
    hide = rentix.deletion_payload("r-1")
    assert hide is not None and (await rentix.upsert(hide, check=False)).ok
    item = await rentix_read(rentix, "r-1")
    assert item is not None and rentix.is_hidden(item)
    assert rentix.held_by_portal(payload, item) == [
        FieldDifference("announcementStatus", "active", "hidden")]
    # ... and our own hide is held by that item.
    assert rentix.held_by_portal(hide, item) == []


async def test_rentix_a_listing_we_hid_but_made_active_by_hand_is_reported(
        rentix: RentixAdapter) -> None:
    payload = rentix.map_listing(crm.listing("r-1", status="hidden"))
    assert (await rentix.upsert(payload)).ok
    assert (await rentix.upsert({"externalId": "r-1", "announcementStatus": "active"},
                                check=False)).ok
    item = await rentix_read(rentix, "r-1")
    assert item is not None and not rentix.is_hidden(item)
    assert rentix.held_by_portal(payload, item) == [
        FieldDifference("announcementStatus", "hidden", "active")]


async def test_rentix_photos_replaced_or_reordered_by_hand_are_reported(
        rentix: RentixAdapter) -> None:
    payload = rentix.map_listing(crm.listing("r-1"))
    assert (await rentix.upsert(payload)).ok
    reordered = list(reversed(payload["files"]))
    assert (await rentix.upsert({"externalId": "r-1", "files": reordered})).ok
    item = await rentix_read(rentix, "r-1")
    assert item is not None
    [difference] = rentix.held_by_portal(payload, item)
    assert (difference.field, difference.ours) == ("files", payload["files"])
    assert [f["externalId"] for f in difference.theirs] == [
        f["externalFileId"] for f in reordered]

    other = rentix.map_listing(crm.listing("r-1", photos=PHOTOS))
    assert (await rentix.upsert({"externalId": "r-1", "files": other["files"]})).ok
    item = await rentix_read(rentix, "r-1")
    assert item is not None
    assert [d.field for d in rentix.held_by_portal(payload, item)] == ["files"]
    assert rentix.held_by_portal({**payload, "files": other["files"]}, item) == []


async def test_rentix_a_listing_seeded_by_hand_with_another_price_differs_in_price_only(
        rentix: RentixAdapter, sandbox: Sandbox) -> None:
    payload = rentix.map_listing(crm.listing("r-1"))
    await sandbox.seed_rentix([{**payload, "announcementValue": 499.99}])
    item = await rentix_read(rentix, "r-1")
    assert item is not None
    assert rentix.held_by_portal(payload, item) == [
        FieldDifference("announcementValue", 500, 499.99)]


async def test_rentix_an_absent_listing_is_reported_absent(rentix: RentixAdapter,
                                                           sandbox: Sandbox) -> None:
    payload = rentix.map_listing(crm.listing("r-1"))
    assert (await rentix.upsert(payload)).ok
    assert (await rentix.delete("r-1")).ok  # gone from the portal by hand
    assert await rentix_read(rentix, "r-1") is None
    assert [item async for item in rentix.iter_listings()] == []
    assert rentix.held_by_portal(payload, None) == [FieldDifference("externalId", "r-1", None)]
    # A hard delete of ours is held by absence, and not by a listing still there.
    deletion = rentix.deletion_payload("r-1", "delete") or {}
    assert rentix.held_by_portal(deletion, None) == []
    [seeded] = await sandbox.seed_rentix([{"externalId": "r-2"}])
    item = await rentix_read(rentix, "r-2")
    assert item is not None and item["id"] == seeded
    assert rentix.held_by_portal({**deletion, "externalId": "r-2"}, item) == [
        FieldDifference("op", "delete", "active")]


async def test_rentix_unlinked_listings_have_no_portal_ref(rentix: RentixAdapter,
                                                           sandbox: Sandbox) -> None:
    await sandbox.seed_rentix([crm.hand_made()])
    [item] = [item async for item in rentix.iter_listings()]
    assert rentix.portal_ref(item) is None


def test_rentix_publishing_counts_as_active_and_other_states_do_not(
        rentix_adapter: RentixAdapter) -> None:
    payload = {"externalId": "r-1", "announcementStatus": "active"}

    def item(state: str) -> dict[str, Any]:
        return {"externalId": "r-1", "formData": {"announcementStatus": state}}

    assert rentix_adapter.held_by_portal(payload, item("pending_active")) == []
    assert rentix_adapter.held_by_portal(payload, item("active")) == []
    for state in ("publish_failed", "expired", "draft", "hidden"):
        assert rentix_adapter.held_by_portal(payload, item(state)) == [
            FieldDifference("announcementStatus", "active", state)]
    assert rentix_adapter.portal_state(item("blocked")) == "blocked"


def test_rentix_numbers_compare_as_numbers_and_translations_hold_our_text(
        rentix_adapter: RentixAdapter) -> None:
    text = "Bright two-bedroom apartment near the centre, renovated in 2025."
    payload = {"externalId": "r-1", "announcementValue": Decimal("500"),
               "propertyCoordinates": {"lat": 47, "lng": 28.5},
               "announcementDescription": text}
    form: dict[str, Any] = {
        "announcementValue": 500.0, "propertyCoordinates": {"lat": 47.0, "lng": 28.5},
        "announcementDescription": {"en": text, "ro": "Apartament luminos..."}}
    item = {"externalId": "r-1", "formData": form}
    assert rentix_adapter.held_by_portal(payload, item) == []
    form["announcementValue"] = "500"  # a string is not the number we sent
    assert [d.field for d in rentix_adapter.held_by_portal(payload, item)] == [
        "announcementValue"]


# -- Travtus --


async def test_travtus_holds_what_was_synced(travtus: TravtusAdapter) -> None:
    canonicals = list(CANONICALS.values())
    payloads = {c["external_ref"]: travtus.map_listing(c)
                for c in canonicals if travtus.include_in_sync(c)}
    assert (await travtus.sync("north", travtus.map_group(canonicals))).ok
    items = await travtus_read(travtus, "north")
    assert set(items) == set(payloads)  # the hidden one is left out of the group
    assert {ref: travtus.held_by_portal(p, items[ref]) for ref, p in payloads.items()} == {
        ref: [] for ref in payloads}


@pytest.mark.parametrize(("change", "field", "ours", "theirs"), [
    ({"lease_terms": [{"length_in_months": 12, "rent": 650, "deposit": 500}]},
     "lease_terms[].rent", 500, 650),
    ({"lease_terms": [{"length_in_months": 12, "rent": 500, "deposit": 900}]},
     "lease_terms[].deposit", 500, 900),
    ({"number_of_bathrooms": 2}, "number_of_bathrooms", 1,
     {"full_bathrooms": 2, "half_bathrooms": 0}),
    ({"number_of_bathrooms": 1.5}, "number_of_bathrooms", 1,
     {"full_bathrooms": 1, "half_bathrooms": 1}),
    ({"image_urls": PHOTOS}, "image_urls", [f"https://img.example.com/t-1/{i}.jpg"
                                            for i in range(3)], PHOTOS),
    ({"description": NEW_DESCRIPTION}, "description",
     crm.listing("t-1")["description"], NEW_DESCRIPTION),
    ({"description": None}, "description", crm.listing("t-1")["description"], None),
    ({"bedrooms": 3}, "bedrooms", 2, 3),
    ({"sqft": 750.0}, "sqft", 699.7, 750.0),
    ({"is_furnished": False}, "is_furnished", True, False),
    ({"finish": "gold"}, "finish", None, "gold"),  # added by hand: a sync would clear it
])
async def test_travtus_a_hand_edit_is_reported_as_exactly_that_field(
        change: dict[str, Any], field: str, ours: Any, theirs: Any,
        travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    payload = travtus.map_listing(crm.listing("t-1"))
    assert (await travtus.sync("north", [payload])).ok
    await sandbox.seed_travtus("north", [without_none({**payload, **change})])
    item = (await travtus_read(travtus, "north"))["t-1"]
    assert travtus.held_by_portal(payload, item) == [FieldDifference(field, ours, theirs)]


async def test_travtus_an_absent_listing_is_reported_absent_and_a_foreign_one_is_seen(
        travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    hidden = crm.listing("t-3", status="hidden")
    canonicals = [crm.listing("t-1"), crm.listing("t-2"), hidden]
    payloads = {c["external_ref"]: travtus.map_listing(c) for c in canonicals}
    assert (await travtus.sync("north", travtus.map_group(canonicals))).ok
    found = await travtus.find_all("north")
    [t2] = [item for item in found if travtus.portal_ref(item) == "t-2"]
    assert (await travtus.delete_listing(t2["identifier"])).ok  # gone by hand
    await sandbox.seed_travtus("north", [payloads["t-3"]])  # the hidden one put back by hand
    items = await travtus_read(travtus, "north")
    assert sorted(items) == ["t-1", "t-3"]
    assert travtus.held_by_portal(payloads["t-2"], items.get("t-2")) == [
        FieldDifference("external_reference", "t-2", None)]
    assert travtus.held_by_portal(payloads["t-1"], items["t-1"]) == []


def test_travtus_bathroom_lists_and_counts_compare_with_full_and_half(
        travtus_adapter: TravtusAdapter) -> None:
    def item(full: int, half: int) -> dict[str, Any]:
        return {"external_ref": "t-1", "full_bathrooms": full, "half_bathrooms": half}

    listed = {"external_reference": "t-1", "bathrooms": [
        {"has_shower_or_bath": True, "has_sink": True, "has_toilet": True},
        {"has_shower_or_bath": False, "has_sink": True, "has_toilet": True}]}
    assert travtus_adapter.held_by_portal(listed, item(1, 1)) == []
    assert [d.field for d in travtus_adapter.held_by_portal(listed, item(2, 0))] == [
        "bathrooms"]
    counted = {"external_reference": "t-1", "number_of_bathrooms": 2.0}
    assert travtus_adapter.held_by_portal(counted, item(2, 0)) == []
    assert travtus_adapter.held_by_portal(counted, item(1, 2)) == []  # two halves: 2 baths
    assert travtus_adapter.held_by_portal({**counted, "number_of_bathrooms": 1.25},
                                          item(1, 1)) == []  # only halves exist


def test_travtus_only_a_twelve_month_lease_and_ids_we_sent_are_compared(
        travtus_adapter: TravtusAdapter) -> None:
    payload = {"external_reference": "t-1", "number_of_bathrooms": 1,
               "lease_terms": [{"length_in_months": 6, "rent": 700},
                               {"length_in_months": 12, "rent": 600.0}],
               "address": {"address_line_1": "not in the find view"},
               "active_date": "2026-01-01"}
    item = {"external_ref": "t-1", "full_bathrooms": 1, "half_bathrooms": 0,
            "rent_for_12_month_lease": 600, "identifier": "1001", "unit_id": "unit-1",
            "is_flex": False, "amenities": [], "move_in_date": None}
    assert travtus_adapter.held_by_portal(payload, item) == []
    assert travtus_adapter.held_by_portal({**payload, "unit_id": "u-9"}, item) == [
        FieldDifference("unit_id", "u-9", "unit-1")]
    tags = {**payload, "amenities": ["Pool", "Gym"], "move_in_date": "2026-12-01"}
    assert travtus_adapter.held_by_portal(tags, {
        **item, "amenities": ["Gym", "Pool"], "move_in_date": "2026-12-01T00:00:00Z"}) == []


# -- the pace hook and paging --


async def test_rentix_reads_await_pace_before_each_request(rentix: RentixAdapter,
                                                           sandbox: Sandbox) -> None:
    await sandbox.seed_rentix([{"externalId": f"s-{i:03}"} for i in range(230)])
    requests_before: list[int] = []

    async def pace() -> None:
        requests_before.append(len(await sandbox.journal("rentix")))

    items = [item async for item in rentix.iter_listings(pace=pace)]
    assert len(items) == 230 and requests_before == [0, 1, 2]  # three pages, each paced first
    assert rentix.rate_limit.remaining is not None  # the normal path: headers tracked
    found = await rentix.get_by_external_id("s-007", pace=pace)
    assert found.ok and requests_before[-1] == 3
    missing = await rentix.get_by_external_id("nobody", pace=pace)
    assert missing.outcome is Outcome.NOT_FOUND and len(requests_before) == 5


async def test_travtus_reads_await_pace_before_each_request_the_retry_too(
        travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    await sandbox.seed_travtus("big", [travtus.map_listing(crm.listing(f"r{i}"))
                                       for i in range(230)])
    paced: list[str] = []

    async def pace() -> None:
        paced.append("find")

    assert len(await travtus.find_all("big", pace=pace)) == 230
    assert paced == ["find"] * 3
    await sandbox.expire_tokens()
    paced.clear()
    assert (await travtus.find_page("big", pace=pace)).ok
    assert paced == ["find", "find"]  # refused as expired, retried with a new token


async def test_rentix_a_page_failing_midway_raises_the_classified_result(
        rentix: RentixAdapter, sandbox: Sandbox) -> None:
    await sandbox.seed_rentix([{"externalId": f"s-{i:03}"} for i in range(150)])
    pages = rentix.iter_listings()
    assert (await anext(pages))["externalId"] == "s-000"
    await sandbox.fault(portal="rentix", method="GET", path="/listings", status=503)
    with pytest.raises(PortalError) as failed:
        async for _ in pages:
            pass
    assert (failed.value.result.outcome, failed.value.result.status) == (Outcome.TRANSIENT, 503)


async def test_a_success_that_is_not_a_page_is_never_an_empty_portal(
        rentix: RentixAdapter, travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    await sandbox.fault(portal="rentix", method="GET", path="/listings", status=200,
                        body="<html>maintenance</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(PortalError) as rentix_failed:
        [item async for item in rentix.iter_listings()]
    await sandbox.fault(portal="travtus", path="/listings/find/", status=200,
                        body={"listings": []})  # no last_id
    with pytest.raises(PortalError) as travtus_failed:
        await travtus.find_all("north")
    for failed in (rentix_failed, travtus_failed):
        assert failed.value.result.outcome is Outcome.TRANSIENT
        assert failed.value.result.error_type == "unexpected_body"


async def test_travtus_only_the_typed_not_found_is_an_empty_group(
        travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    assert await travtus.find_all("nobody-here") == []
    await sandbox.fault(portal="travtus", path="/listings/find/", status=404, body="no route")
    with pytest.raises(PortalError) as failed:
        await travtus.find_all("nobody-here")
    assert (failed.value.result.outcome, failed.value.result.error_type) == (
        Outcome.NOT_FOUND, "http_404")
    await sandbox.clear_faults()
    await sandbox.deny_group("north")
    with pytest.raises(PortalError) as denied:
        await travtus.find_all("north")
    assert denied.value.result.outcome is Outcome.CREDENTIALS_INVALID


@pytest.fixture
async def rentix_adapter() -> AsyncIterator[RentixAdapter]:
    """An adapter for the pure comparisons: nothing is sent."""
    adapter = RentixAdapter("rentix", "http://127.0.0.1:9", "unused")
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def travtus_adapter() -> AsyncIterator[TravtusAdapter]:
    adapter = TravtusAdapter("travtus", "http://127.0.0.1:9", "http://127.0.0.1:9/t", "u", "u")
    yield adapter
    await adapter.aclose()
