"""Travtus sandbox over real HTTP: token, auth, every sync rule, sync semantics, find, create,
delete."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from bridge.sandbox import SandboxSettings, create_app
from tests.support.servers import serve_app, wait_until

from .conftest import bearer, sync_listing, token

SYNC, FIND, CREATE = "/travtus/listing/sync/", "/travtus/listings/find/", "/travtus/listing/"


def assert_error(r: httpx.Response, status: int, kind: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["type"] == kind
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def listings_of(client: httpx.Client, group: str) -> dict[str, dict[str, Any]]:
    found = client.get("/_sandbox/travtus/listings", params={"group": group}).json()["listings"]
    return {x["external_reference"]: x for x in found}


# -- token ---------------------------------------------------------------------------------------

def test_token(client: httpx.Client) -> None:
    r = client.post("/travtus/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": "sandbox", "client_secret": "sandbox"})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert isinstance(body["access_token"], str) and len(body["access_token"]) > 20


@pytest.mark.parametrize(("form", "status", "kind"), [
    ({"grant_type": "client_credentials", "client_id": "sandbox"}, 400, "invalid_request"),
    ({"client_id": "sandbox", "client_secret": "sandbox"}, 400, "invalid_request"),
    ({"grant_type": "password", "client_id": "sandbox", "client_secret": "sandbox"}, 400,
     "invalid_request"),
    ({"grant_type": "client_credentials", "client_id": "sandbox", "client_secret": "bad"}, 401,
     "invalid_client"),
    ({"grant_type": "client_credentials", "client_id": "who", "client_secret": "sandbox"}, 401,
     "invalid_client"),
])
def test_token_errors(client: httpx.Client, form: dict[str, str], status: int, kind: str) -> None:
    assert_error(client.post("/travtus/oauth2/token", data=form), status, kind)


def test_token_with_basic_auth(client: httpx.Client) -> None:
    basic = base64.b64encode(b"sandbox:sandbox").decode()
    r = client.post("/travtus/oauth2/token", data={"grant_type": "client_credentials"},
                    headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200


# -- authorization on every endpoint ------------------------------------------------------------

ENDPOINTS = [("POST", SYNC), ("POST", FIND), ("POST", CREATE), ("DELETE", "/travtus/listings/1/")]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize(("authorization", "status", "kind"), [
    (None, 400, "missing_authorization"),
    ("Basic c2FuZGJveDpzYW5kYm94", 400, "missing_authorization"),
    ("Bearer", 400, "missing_authorization"),
    ("Bearer not-a-token", 401, "invalid_authorization"),
])
def test_authorization_errors(client: httpx.Client, method: str, path: str,
                              authorization: str | None, status: int, kind: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    r = client.request(method, path, json={"group_external_ref": "g"}, headers=headers)
    assert_error(r, status, kind)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_expired_token(client: httpx.Client, method: str, path: str) -> None:
    headers = bearer(client)
    assert client.post("/_sandbox/travtus/expire-tokens").status_code == 200
    r = client.request(method, path, json={"group_external_ref": "g"}, headers=headers)
    assert_error(r, 401, "expired_token")
    fresh = bearer(client)  # tokens issued afterwards work
    assert client.post(SYNC, json={"group_external_ref": "g", "listings": []},
                       headers=fresh).status_code == 200


def test_scheme_is_case_insensitive(client: httpx.Client) -> None:
    r = client.post(SYNC, json={"group_external_ref": "g"},
                    headers={"Authorization": f"bearer {token(client)}"})
    assert r.status_code == 200


@pytest.fixture
def short_tokens() -> Iterator[httpx.Client]:
    with serve_app(create_app(SandboxSettings(token_ttl=1))) as url, \
            httpx.Client(base_url=url, timeout=10) as c:
        yield c


def test_token_ttl(short_tokens: httpx.Client) -> None:
    c = short_tokens
    r = c.post("/travtus/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": "sandbox", "client_secret": "sandbox"})
    assert r.json()["expires_in"] == 1
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    body = {"group_external_ref": "g"}
    assert c.post(SYNC, json=body, headers=headers).status_code == 200
    wait_until(lambda: c.post(SYNC, json=body, headers=headers).status_code == 401, timeout=5)
    assert_error(c.post(SYNC, json=body, headers=headers), 401, "expired_token")


# -- sync: group checks ----------------------------------------------------------------------

@pytest.mark.parametrize(("body", "status", "kind"), [
    ({"group_id": "1", "group_external_ref": "g"}, 400, "both_group_identifiers_provided"),
    ({"listings": []}, 400, "no_group_provided"),
    ({"group_id": "", "group_external_ref": ""}, 400, "no_group_provided"),
    ({"group_id": "404"}, 401, "no_access_to_group"),
    ({"group_external_ref": "denied"}, 401, "no_access_to_group"),
    ({"group_external_ref": "g", "listings": "nope"}, 400, "invalid_request"),
])
def test_sync_group_errors(client: httpx.Client, body: dict[str, Any], status: int,
                           kind: str) -> None:
    client.post("/_sandbox/travtus/groups/denied/deny")
    assert_error(client.post(SYNC, json=body, headers=bearer(client)), status, kind)


def test_sync_body_must_be_json_object(client: httpx.Client) -> None:
    headers = bearer(client)
    r = client.post(SYNC, content=b"[1,2]", headers={**headers, "Content-Type": "application/json"})
    assert_error(r, 400, "invalid_request")
    assert_error(client.post(SYNC, content=b"{x", headers=headers), 400, "invalid_request")


# -- sync: listing rules, in order, atomic ------------------------------------------------------

def _without(name: str) -> dict[str, Any]:
    listing = sync_listing("bad")
    del listing[name]
    return listing


@pytest.mark.parametrize(("listing", "status", "kind"), [
    (_without("external_reference"), 401, "no_external_reference"),
    (sync_listing(""), 401, "no_external_reference"),
    (sync_listing("bad", bathrooms=[{"has_toilet": True}]), 400,
     "both_bathroom_attributes_provided"),
    (_without("number_of_bathrooms"), 401, "no_bathroom_attributes_provided"),
    (sync_listing("bad", number_of_bathrooms=0.5), 401, "invalid_number_of_bathrooms"),
    (_without("unit_type"), 401, "missing_unit_type"),
    (sync_listing("bad", unit_type="house"), 401, "invalid_unit_type"),
    (_without("listing_url"), 401, "missing_listing_url"),
    (sync_listing("bad", listing_url=""), 401, "missing_listing_url"),
    (sync_listing("bad", active_date="2026/01/01"), 401, "date_format_invalid"),
    (sync_listing("bad", move_in_date="2026-02-30"), 401, "date_format_invalid"),
    (sync_listing("bad", move_in_date="2026-1-5"), 401, "date_format_invalid"),
    (sync_listing("bad", address={"address_line_1": "1 Main St", "state": "NY"}), 400,
     "invalid_address"),
    # first failing rule wins: no external reference before a bad unit type
    ({**_without("external_reference"), "unit_type": "house"}, 401, "no_external_reference"),
    ({**_without("number_of_bathrooms"), "unit_type": "house"}, 401,
     "no_bathroom_attributes_provided"),
])
def test_sync_listing_rules(client: httpx.Client, listing: dict[str, Any], status: int,
                            kind: str) -> None:
    headers = bearer(client)
    client.post(SYNC, json={"group_external_ref": "g", "listings": [sync_listing("keep")]},
                headers=headers)
    before = listings_of(client, "g")
    # a valid listing first, the bad one second: the whole request must change nothing
    body = {"group_external_ref": "g", "listings": [sync_listing("new"), listing]}
    assert_error(client.post(SYNC, json=body, headers=headers), status, kind)
    assert listings_of(client, "g") == before


def test_sync_accepts_the_documented_shapes(client: httpx.Client) -> None:
    listing = sync_listing(
        "full", number_of_bathrooms=None,
        bathrooms=[{"identifier": "b1", "has_shower_or_bath": True, "has_sink": True,
                    "has_toilet": True}, {"has_shower_or_bath": False, "has_toilet": True}],
        address={"address_line_1": "1 Main St", "state": "NY", "postal_code": "10001",
                 "country": "United States"},
        active_date="2026-01-01", move_in_date="2026-02-01", bedrooms=2, sqft=700.5,
        lease_terms=[{"rent": 2000.0, "deposit": 500.0, "length_in_months": 12}],
        amenities=["Gym"], features=["Floor heating"], unit_type="studio_apartment")
    r = client.post(SYNC, json={"group_external_ref": "g", "listings": [listing]},
                    headers=bearer(client))
    assert r.status_code == 200 and r.json() == {"success": True}
    found = client.post(FIND, json={"group_external_ref": "g"}, headers=bearer(client)).json()
    got = found["listings"][0]
    assert (got["full_bathrooms"], got["half_bathrooms"]) == (1, 1)
    assert got["rent_for_12_month_lease"] == 2000.0 and got["deposit_for_12_month_lease"] == 500.0
    assert got["external_ref"] == "full" and "address" not in got and "lease_terms" not in got


# -- sync: semantics ---------------------------------------------------------------------------

def test_sync_creates_updates_and_deletes(client: httpx.Client) -> None:
    headers = bearer(client)
    body = {"group_external_ref": "north", "listings": [
        sync_listing("a", bedrooms=2, description="first"), sync_listing("b"),
        sync_listing("c")]}
    assert client.post(SYNC, json=body, headers=headers).status_code == 200
    client.post(SYNC, json={"group_external_ref": "south", "listings": [sync_listing("a")]},
                headers=headers)
    first = listings_of(client, "north")
    assert set(first) == {"a", "b", "c"}
    # update a (replaced whole: description dropped), keep b, leave c out, add d
    body = {"group_external_ref": "north", "listings": [
        sync_listing("a", bedrooms=3), sync_listing("b"), sync_listing("d")]}
    assert client.post(SYNC, json=body, headers=headers).status_code == 200
    second = listings_of(client, "north")
    assert set(second) == {"a", "b", "d"}
    assert second["a"]["identifier"] == first["a"]["identifier"]
    assert second["a"]["bedrooms"] == 3 and second["a"].get("description") is None
    assert int(second["d"]["identifier"]) > int(first["c"]["identifier"])
    assert set(listings_of(client, "south")) == {"a"}  # other groups untouched


@pytest.mark.parametrize("body", [{"group_external_ref": "north", "listings": []},
                                  {"group_external_ref": "north"}])
def test_sync_without_listings_empties_the_group(client: httpx.Client,
                                                 body: dict[str, Any]) -> None:
    headers = bearer(client)
    client.post(SYNC, json={"group_external_ref": "north",
                            "listings": [sync_listing("a"), sync_listing("b")]}, headers=headers)
    assert len(listings_of(client, "north")) == 2
    assert client.post(SYNC, json=body, headers=headers).json() == {"success": True}
    assert listings_of(client, "north") == {}


def test_sync_by_group_id(client: httpx.Client) -> None:
    group_id = client.post("/_sandbox/travtus/groups", json={"group": "west"}).json()["group_id"]
    r = client.post(SYNC, json={"group_id": group_id, "listings": [sync_listing("a")]},
                    headers=bearer(client))
    assert r.status_code == 200
    assert set(listings_of(client, "west")) == {"a"}


@pytest.mark.parametrize("path", ["/travtus/listing/sync/", "/travtus/listing/sync"])
def test_sync_paths_with_and_without_slash(client: httpx.Client, path: str) -> None:
    r = client.post(path, json={"group_external_ref": "g"}, headers=bearer(client))
    assert r.status_code == 200


# -- find --------------------------------------------------------------------------------------

def test_find_pages_through_more_than_a_hundred(client: httpx.Client) -> None:
    seeded = client.post("/_sandbox/travtus/listings", json={
        "group": "big", "listings": [sync_listing(f"r{i}") for i in range(250)]}).json()
    assert seeded["identifiers"][0] == "1001"
    headers = bearer(client)
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        body: dict[str, Any] = {"group_external_ref": "big"}
        if after is not None:
            body["after-id"] = after
        r = client.post("/travtus/listings/find", json=body, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        assert len(page["listings"]) <= 100
        seen += [x["identifier"] for x in page["listings"]]
        if page["last_id"] == -1:
            break
        assert isinstance(page["last_id"], int)
        after = str(page["last_id"])
    assert pages == 3
    assert seen == seeded["identifiers"]


def test_find_filters_and_errors(client: httpx.Client) -> None:
    ids = client.post("/_sandbox/travtus/listings", json={
        "group": "g", "listings": [sync_listing("x"), sync_listing("y")]}).json()["identifiers"]
    client.post("/_sandbox/travtus/groups/denied/deny")
    headers = bearer(client)

    def find(body: dict[str, Any]) -> httpx.Response:
        return client.post(FIND, json=body, headers=headers)

    assert [x["identifier"] for x in find({"group_external_ref": "g",
                                          "external_ref": "y"}).json()["listings"]] == [ids[1]]
    assert [x["external_ref"] for x in find({"group_external_ref": "g",
                                            "identifier": ids[0]}).json()["listings"]] == ["x"]
    assert_error(find({"group_external_ref": "g", "external_ref": "nope"}), 404, "not_found")
    assert_error(find({"group_external_ref": "g", "after-id": ids[1]}), 404, "not_found")
    assert_error(find({"group_external_ref": "empty"}), 404, "not_found")
    assert_error(find({}), 400, "no_group_identifier_provided")
    assert_error(find({"group_id": "1", "group_external_ref": "g"}), 400,
                 "both_group_identifiers_provided")
    assert_error(find({"group_external_ref": "denied"}), 401, "no_access_to_group")
    assert_error(find({"group_id": "999"}), 401, "no_access_to_group")


def test_find_returns_active_listings_only(client: httpx.Client) -> None:
    later = (date.today() + timedelta(days=30)).isoformat()
    client.post("/_sandbox/travtus/listings", json={"group": "g", "listings": [
        sync_listing("now"), sync_listing("later", active_date=later)]})
    got = client.post(FIND, json={"group_external_ref": "g"}, headers=bearer(client)).json()
    assert [x["external_ref"] for x in got["listings"]] == ["now"]


# -- single create -----------------------------------------------------------------------------

def test_single_create_and_update_by_unit(client: httpx.Client) -> None:
    group_id = client.post("/_sandbox/travtus/groups", json={"group": "g"}).json()["group_id"]
    headers = bearer(client)
    body = {"group_id": group_id, "unit_type": "apartment", "listing_url": "https://x/1",
            "unit_id": "u-7", "bedrooms": 1,
            "lease_terms": [{"rent": 900.0, "deposit": 100.0, "length_in_months": 12}]}
    for path in ("/travtus/listing/", "/travtus/listing"):
        r = client.post(path, json=body, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["success"] is True
    listing = r.json()["listing"]
    assert listing["unit_id"] == "u-7" and listing["rent_for_12_month_lease"] == 900.0
    assert listing["lease_terms"][0]["identifier"]
    # same unit_id: one listing, updated
    found = client.get("/_sandbox/travtus/listings", params={"group": "g"}).json()["listings"]
    assert len(found) == 1 and found[0]["identifier"] == listing["identifier"]


@pytest.mark.parametrize(("body", "status", "kind"), [
    ({"group_external_ref": "g", "unit_type": "apartment", "listing_url": "u"}, 400,
     "no_group_provided"),
    ({"group_id": "404", "unit_type": "apartment", "listing_url": "u"}, 401,
     "no_access_to_group"),
    ({"group_id": "GID", "listing_url": "u"}, 400, "missing_or_invalid_unit_type"),
    ({"group_id": "GID", "unit_type": "loft", "listing_url": "u"}, 400,
     "missing_or_invalid_unit_type"),
    ({"group_id": "GID", "unit_type": "apartment"}, 400, "no_listing_url"),
])
def test_single_create_errors(client: httpx.Client, body: dict[str, Any], status: int,
                              kind: str) -> None:
    group_id = client.post("/_sandbox/travtus/groups", json={"group": "g"}).json()["group_id"]
    if body.get("group_id") == "GID":
        body = {**body, "group_id": group_id}
    assert_error(client.post(CREATE, json=body, headers=bearer(client)), status, kind)


# -- delete ------------------------------------------------------------------------------------

def test_delete_now_scheduled_and_errors(client: httpx.Client) -> None:
    ids = client.post("/_sandbox/travtus/listings", json={
        "group": "g", "listings": [sync_listing("a"), sync_listing("b")]}).json()["identifiers"]
    headers = bearer(client)
    r = client.delete(f"/travtus/listings/{ids[0]}/", headers=headers)
    assert r.status_code == 200 and r.json() == {"success": True, "listing_id": ids[0]}
    assert set(listings_of(client, "g")) == {"b"}
    assert_error(client.delete(f"/travtus/listings/{ids[0]}", headers=headers), 401,
                 "not_authorized")
    later = (date.today() + timedelta(days=3)).isoformat()
    r = client.request("DELETE", f"/travtus/listings/{ids[1]}", json={"inactive-date": later},
                       headers=headers)
    assert r.status_code == 200
    assert listings_of(client, "g")["b"]["inactive_date"] == later  # scheduled, still there
    r = client.request("DELETE", f"/travtus/listings/{ids[1]}/",
                       json={"inactive_date": "03/01/2026"}, headers=headers)
    assert_error(r, 401, "date_format_invalid")
    past = (date.today() - timedelta(days=1)).isoformat()
    r = client.request("DELETE", f"/travtus/listings/{ids[1]}/", json={"inactive_date": past},
                       headers=headers)
    assert r.status_code == 200 and listings_of(client, "g") == {}


def test_delete_in_denied_group(client: httpx.Client) -> None:
    ids = client.post("/_sandbox/travtus/listings", json={
        "group": "g", "listings": [sync_listing("a")]}).json()["identifiers"]
    client.post("/_sandbox/travtus/groups/g/deny")
    assert_error(client.delete(f"/travtus/listings/{ids[0]}/", headers=bearer(client)), 401,
                 "not_authorized")


def test_unknown_route(client: httpx.Client) -> None:
    assert_error(client.get("/travtus/communities/"), 404, "not_found")
