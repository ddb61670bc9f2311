"""Rentix sandbox over real HTTP: every row of the interpretations page's Rentix table."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bridge.sandbox import SandboxSettings, create_app
from tests.support.servers import serve_app, wait_until

from .conftest import KEY, RENTIX, publishable

REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           409: "Conflict", 413: "Payload Too Large", 415: "Unsupported Media Type",
           422: "Unprocessable Entity", 429: "Too Many Requests"}


def assert_error(r: httpx.Response, status: int, message: Any) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["statusCode"] == status
    assert body["error"] == REASONS[status]
    if isinstance(message, list):
        assert isinstance(body["message"], list)
        for part in message:
            assert any(m == part for m in body["message"]), (part, body["message"])
    else:
        assert body["message"] == message


def put(client: httpx.Client, payload: dict[str, Any], **headers: str) -> httpx.Response:
    return client.put(f"{RENTIX}/listings", json=payload, headers={**KEY, **headers})


# -- authentication ------------------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "status", "message"), [
    ({"Authorization": "ApiKey sandbox", "X-API-Key": "sandbox"}, 400,
     "Multiple authentication methods provided"),
    ({}, 401, "API key is required"),
    ({"Authorization": "ApiKey nope"}, 401, "Invalid API key"),
    ({"X-API-Key": "nope"}, 401, "Invalid API key"),
])
def test_auth_errors(client: httpx.Client, headers: dict[str, str], status: int,
                     message: str) -> None:
    r = client.get(f"{RENTIX}/agency", headers=headers)
    assert_error(r, status, message)
    assert "X-RateLimit-Limit" not in r.headers  # only authenticated answers carry them


@pytest.mark.parametrize("headers", [{"Authorization": "ApiKey sandbox"},
                                     {"authorization": "apikey sandbox"},
                                     {"X-API-Key": "sandbox"}])
def test_auth_accepts_both_header_forms(client: httpx.Client, headers: dict[str, str]) -> None:
    r = client.get(f"{RENTIX}/agency", headers=headers)
    assert r.status_code == 200
    assert r.json()["limits"]["monthlyListings"]["limit"] == 1000


@pytest.mark.parametrize(("switch", "message"), [
    ({"suspended": True}, "Agency is suspended"),
    ({"crm_enabled": False}, "CRM is not enabled for this agency"),
])
def test_agency_switches(client: httpx.Client, switch: dict[str, bool], message: str) -> None:
    assert client.post("/_sandbox/rentix/agency", json=switch).status_code == 200
    assert_error(client.get(f"{RENTIX}/agency", headers=KEY), 403, message)


# -- body checks and their order -----------------------------------------------------------------

def test_unsupported_media_type(client: httpx.Client) -> None:
    r = client.put(f"{RENTIX}/listings", content=b"externalId=x",
                   headers={**KEY, "Content-Type": "application/x-www-form-urlencoded"})
    assert_error(r, 415, "Unsupported Media Type")
    r = client.post(f"{RENTIX}/listings/1/link", content=b"{}", headers=KEY)
    assert_error(r, 415, "Unsupported Media Type")


@pytest.mark.parametrize("chunked", [False, True])
def test_payload_too_large(client: httpx.Client, chunked: bool) -> None:
    body = b'{"externalId": "' + b"x" * 600_000 + b'"}'
    content: Any = iter([body[i:i + 65536] for i in range(0, len(body), 65536)]) if chunked \
        else body
    r = client.put(f"{RENTIX}/listings", content=content,
                   headers={**KEY, "Content-Type": "application/json"})
    assert_error(r, 413, "Payload Too Large")
    # Just under the limit is read (and judged on its content instead).
    small = b'{"externalId": "' + b"x" * 300 + b'"}'
    r = client.put(f"{RENTIX}/listings", content=small,
                   headers={**KEY, "Content-Type": "application/json"})
    assert_error(r, 400, ["externalId must be shorter than or equal to 255 characters"])


def test_invalid_json(client: httpx.Client) -> None:
    r = client.put(f"{RENTIX}/listings", content=b"{nope",
                   headers={**KEY, "Content-Type": "application/json; charset=utf-8"})
    assert_error(r, 400, "Invalid JSON body")


def test_check_order(client: httpx.Client) -> None:
    client.post("/_sandbox/rate-limits", json={"rentix_per_minute": 1})
    assert client.get(f"{RENTIX}/agency", headers=KEY).status_code == 200
    # authentication before the rate limit
    assert_error(client.get(f"{RENTIX}/agency"), 401, "API key is required")
    # rate limit before 415
    r = client.put(f"{RENTIX}/listings", content=b"x", headers=KEY)
    assert_error(r, 429, "Too Many Requests")
    client.post("/_sandbox/reset")
    # 415 before 413, 413 before JSON
    big = b"x" * 600_000
    assert client.put(f"{RENTIX}/listings", content=big, headers=KEY).status_code == 415
    r = client.put(f"{RENTIX}/listings", content=big,
                   headers={**KEY, "Content-Type": "application/json"})
    assert r.status_code == 413


# -- upsert validation ---------------------------------------------------------------------------

@pytest.mark.parametrize(("payload", "messages"), [
    ({}, ["externalId should not be empty"]),
    ({"externalId": 5}, ["externalId must be a string"]),
    ({"externalId": "x" * 256}, ["externalId must be shorter than or equal to 255 characters"]),
    ({"externalId": "a", "announcementStatus": "gone"},
     ["announcementStatus must be one of: draft, active, hidden, expired, completed"]),
    ({"externalId": "a", "announcementType": "lease"},
     ["announcementType must be one of: rent, sale"]),
    ({"externalId": "a", "propertyType": "castle"},
     ["propertyType must be one of: residential, commercial, parking"]),
    ({"externalId": "a", "propertyType": "parking", "propertySecondaryType": "office"},
     ["propertySecondaryType must be one of: underground-parking, open-parking, garage, "
      "covered-parking, other"]),
    ({"externalId": "a", "announcementType": "rent", "propertyType": "residential",
      "propertySecondaryType": "residential-land"},
     ["propertySecondaryType must be one of: apartment, house, room, other"]),
    ({"externalId": "a", "announcementCurrency": "GBP"},
     ["announcementCurrency must be one of: EUR, USD, MDL"]),
    ({"externalId": "a", "announcementPayPeriod": "weekly"},
     ["announcementPayPeriod must be one of: daily, monthly"]),
    ({"externalId": "a", "announcementDescription": "too short"},
     ["announcementDescription must be between 40 and 2000 characters"]),
    ({"externalId": "a", "announcementValue": -1}, ["announcementValue must not be less than 0"]),
    ({"externalId": "a", "propertyArea": "65"}, ["propertyArea must be a number"]),
    ({"externalId": "a", "propertyFloorNumber": 2.5},
     ["propertyFloorNumber must be an integer number"]),
    ({"externalId": "a", "propertyFloorsTotal": "9"},
     ["propertyFloorsTotal must be an integer number"]),
    ({"externalId": "a", "propertyQuantitySizeValue": True},
     ["propertyQuantitySizeValue must be an integer number"]),
    ({"externalId": "a", "propertyCoordinates": {"lat": 95, "lng": 28.8}},
     ["propertyCoordinates.lat must be between -90 and 90"]),
    ({"externalId": "a", "propertyCoordinates": {"lat": 47, "lng": 200}},
     ["propertyCoordinates.lng must be between -180 and 180"]),
    ({"externalId": "a", "files": [{"url": f"u{i}"} for i in range(21)]},
     ["files must contain no more than 20 elements"]),
    ({"externalId": "a", "files": [{"caption": "no source"}]},
     ["files.0 must have url, id or externalFileId"]),
    ({"externalId": "a", "announcementStatus": "active"},
     ["announcementType should not be empty", "propertyType should not be empty",
      "propertySecondaryType should not be empty", "announcementValue should not be empty",
      "announcementCurrency should not be empty",
      "propertyCoordinates or propertyAddress must be provided",
      "files must contain at least 3 photos to publish"]),
    ({**publishable("a"), "files": [{"url": "one"}, {"url": "two"}]},
     ["files must contain at least 3 photos to publish"]),
    ({**publishable("a", announcementStatus="completed"), "propertyAddress": None},
     ["propertyCoordinates or propertyAddress must be provided"]),
])
def test_validation(client: httpx.Client, payload: dict[str, Any], messages: list[str]) -> None:
    r = put(client, payload)
    assert_error(r, 400, messages)
    first_words = {m.split(" ")[0].split(".")[0] for m in r.json()["message"]}
    assert first_words <= {"externalId", "announcementStatus", "announcementType", "propertyType",
                           "propertySecondaryType", "announcementCurrency", "announcementValue",
                           "announcementPayPeriod", "announcementDescription", "propertyArea",
                           "propertyFloorNumber", "propertyFloorsTotal", "files",
                           "propertyQuantitySizeValue", "propertyCoordinates"}
    assert client.get(f"{RENTIX}/listings", headers=KEY).json()["total"] == 0


@pytest.mark.parametrize("payload", [
    {"externalId": "a"},
    {"externalId": "a", "announcementStatus": "hidden", "announcementDescription": None},
    {"externalId": "a", "announcementStatus": "draft", "propertyType": "commercial"},
    {"externalId": "a", "announcementType": "sale", "propertyType": "residential",
     "propertySecondaryType": "residential-land"},
    {"externalId": "a", "propertyCoordinates": {"lat": 47.0, "lng": 28.8}, "userId": 7},
    publishable("a"),
    publishable("a", announcementStatus="expired", propertyAddress=None,
                propertyCoordinates={"lat": 47.0, "lng": 28.8}),
])
def test_valid_payloads_are_accepted(client: httpx.Client, payload: dict[str, Any]) -> None:
    assert put(client, payload).status_code == 200


# -- upsert semantics ----------------------------------------------------------------------------

def test_create_then_partial_update_keeps_omitted_fields(client: httpx.Client) -> None:
    r = put(client, {"externalId": "apt-001", "announcementValue": 500, "propertyArea": 65,
                     "files": [{"url": "a"}, {"url": "b"}]})
    created = r.json()
    assert created == {"id": 1, "externalId": "apt-001", "status": "draft",
                       "publicUrl": "https://rentix.md/announcement/1", "created": True,
                       "jobId": None}
    r = put(client, {"externalId": "apt-001", "announcementValue": 550, "files": [{"url": "c"}]})
    assert r.json()["updated"] is True and "created" not in r.json()
    assert r.json()["id"] == 1 and r.json()["status"] == "draft"
    got = client.get(f"{RENTIX}/listings/external/apt-001", headers=KEY).json()
    assert got["formData"]["announcementValue"] == 550
    assert got["formData"]["propertyArea"] == 65  # omitted: kept
    assert [f["originalUrl"] for f in got["files"]] == ["c"]  # files replace the set
    assert got["formData"]["announcementStatus"] == "draft" and got["formData"]["id"] == 1


def test_hidden_and_publish_lifecycle(client: httpx.Client) -> None:
    r = put(client, publishable("apt-1"))
    body = r.json()
    assert body["status"] == "pending_active" and isinstance(body["jobId"], int)
    job = client.get(f"{RENTIX}/job/status", params={"id": body["jobId"]}, headers=KEY).json()
    assert job["status"] == "completed" and job["type"] == "announcement_finalize"
    got = client.get(f"{RENTIX}/listings/{body['id']}", headers=KEY).json()
    assert got["formData"]["announcementStatus"] == "active"
    r = put(client, {"externalId": "apt-1", "announcementStatus": "hidden"})
    assert r.json()["status"] == "hidden" and r.json()["jobId"] is None
    got = client.get(f"{RENTIX}/listings/external/apt-1", headers=KEY).json()
    assert got["formData"]["announcementStatus"] == "hidden"
    assert got["formData"]["announcementValue"] == 550


def test_job_errors(client: httpx.Client) -> None:
    assert_error(client.get(f"{RENTIX}/job/status", headers=KEY), 400,
                 ["id must be an integer number"])
    assert_error(client.get(f"{RENTIX}/job/status?id=99", headers=KEY), 404, "Job not found")


@pytest.fixture
def slow_publisher() -> Iterator[httpx.Client]:
    with serve_app(create_app(SandboxSettings(publish_delay_s=0.4))) as url, \
            httpx.Client(base_url=url, timeout=10) as c:
        yield c


def test_publish_delay(slow_publisher: httpx.Client) -> None:
    c = slow_publisher
    body = put(c, publishable("slow")).json()
    job_url = f"{RENTIX}/job/status?id={body['jobId']}"
    assert c.get(job_url, headers=KEY).json()["status"] == "pending"
    got = c.get(f"{RENTIX}/listings/{body['id']}", headers=KEY).json()
    assert got["formData"]["announcementStatus"] == "pending_active"
    wait_until(lambda: c.get(job_url, headers=KEY).json()["status"] == "completed", timeout=5)
    got = c.get(f"{RENTIX}/listings/{body['id']}", headers=KEY).json()
    assert got["formData"]["announcementStatus"] == "active"


# -- reads -----------------------------------------------------------------------------------

def test_list_paging(client: httpx.Client) -> None:
    seeded = client.post("/_sandbox/rentix/listings", json={
        "listings": [{"externalId": f"e{i}"} for i in range(25)]}).json()["ids"]
    assert seeded == list(range(1, 26))
    first = client.get(f"{RENTIX}/listings", headers=KEY).json()
    assert first["total"] == 25 and [x["id"] for x in first["items"]] == list(range(1, 21))
    page = client.get(f"{RENTIX}/listings?limit=10&offset=20", headers=KEY).json()
    assert [x["id"] for x in page["items"]] == list(range(21, 26))
    assert_error(client.get(f"{RENTIX}/listings?limit=101", headers=KEY), 400,
                 ["limit must not be greater than 100"])
    assert client.get(f"{RENTIX}/listings?limit=0", headers=KEY).status_code == 400
    assert client.get(f"{RENTIX}/listings?offset=-1", headers=KEY).status_code == 400


def test_read_model(client: httpx.Client) -> None:
    listing_id = put(client, {"externalId": "m", "userId": 4,
                              "files": [{"url": "u", "externalFileId": "f1"}]}).json()["id"]
    got = client.get(f"{RENTIX}/listings/{listing_id}", headers=KEY).json()
    assert set(got) == {"id", "externalId", "publicUrl", "createdAt", "updatedAt",
                        "lastSyncedAt", "formData", "user", "files"}
    assert got["user"]["id"] == 4
    assert {"id", "externalId", "contentType", "size", "optimization"} <= set(got["files"][0])
    assert got["files"][0]["externalId"] == "f1" and isinstance(got["files"][0]["size"], str)


@pytest.mark.parametrize("path", ["/listings/999", "/listings/abc", "/listings/external/none"])
def test_not_found(client: httpx.Client, path: str) -> None:
    assert_error(client.get(f"{RENTIX}{path}", headers=KEY), 404, "Listing not found")


# -- linking -----------------------------------------------------------------------------------

def test_link_and_unlink(client: httpx.Client) -> None:
    # seeded listings default to active; a draft can be updated without publishing fields
    ids = client.post("/_sandbox/rentix/listings", json={"listings": [
        {"announcementValue": 1, "announcementStatus": "draft"}, {"externalId": "taken"}]}
    ).json()["ids"]
    free, linked = ids
    assert client.get(f"{RENTIX}/listings/{free}", headers=KEY).json()["externalId"] is None
    r = client.post(f"{RENTIX}/listings/{free}/link", json={"externalId": "apt-001"}, headers=KEY)
    assert r.status_code == 200 and r.json() == {"id": free, "externalId": "apt-001",
                                                 "linked": True}
    # now addressable by external id, and an upsert updates it
    assert put(client, {"externalId": "apt-001", "announcementValue": 550}).json()["updated"]
    # a seeded active listing keeps its public status, so a partial update is checked in full
    r = put(client, {"externalId": "taken", "announcementValue": 1})
    assert_error(r, 400, ["files must contain at least 3 photos to publish"])
    r = client.delete(f"{RENTIX}/listings/{free}/link", headers=KEY)
    assert r.json() == {"id": free, "externalId": "apt-001", "unlinked": True}
    assert client.get(f"{RENTIX}/listings/external/apt-001", headers=KEY).status_code == 404
    assert linked


@pytest.mark.parametrize(("method", "target", "body", "status", "message"), [
    ("POST", "999", {"externalId": "x"}, 404, "Listing not found"),
    ("POST", "linked", {"externalId": "new"}, 409, "Listing already has external ID"),
    # both conflicts at once: "already has" is checked first
    ("POST", "linked", {"externalId": "other"}, 409, "Listing already has external ID"),
    ("POST", "free", {"externalId": "other"}, 409, "External ID already linked"),
    ("POST", "free", {}, 400, ["externalId should not be empty"]),
    ("DELETE", "999", None, 404, "Listing not found"),
    ("DELETE", "free", None, 400, "Listing has no external ID"),
])
def test_link_errors(client: httpx.Client, method: str, target: str, body: Any, status: int,
                     message: Any) -> None:
    ids = client.post("/_sandbox/rentix/listings", json={"listings": [
        {}, {"externalId": "mine"}, {"externalId": "other"}]}).json()["ids"]
    listing_id = {"free": ids[0], "linked": ids[1]}.get(target, target)
    r = client.request(method, f"{RENTIX}/listings/{listing_id}/link", json=body, headers=KEY)
    assert_error(r, status, message)


# -- bulk --------------------------------------------------------------------------------------

def test_bulk_mixed_operations(client: httpx.Client) -> None:
    seeded = client.post("/_sandbox/rentix/listings", json={"listings": [
        {}, {"externalId": "to-unlink"}, {"externalId": "to-delete"}]}).json()["ids"]
    ops = [
        {"op": "upsert", "externalId": "n1", "announcementValue": 10},
        {"op": "link", "id": seeded[0], "externalId": "linked-now"},
        {"op": "unlink", "id": seeded[1]},
        {"op": "delete", "externalId": "to-delete"},
        {"op": "validate", "externalId": "v1", "announcementStatus": "active"},
        {"op": "validate", "externalId": "v2"},
        {"op": "explode"},
    ]
    r = client.post(f"{RENTIX}/listings/bulk", json={"operations": ops}, headers=KEY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"] == {"total": 7, "succeeded": 5, "failed": 2}
    assert [x["success"] for x in body["results"]] == [True, True, True, True, False, True, False]
    assert [x["index"] for x in body["results"]] == list(range(7))
    assert body["results"][4]["error"]["statusCode"] == 400
    assert body["results"][0]["error"] is None and body["results"][0]["id"]
    items = {x["externalId"]: x for x in
             client.get(f"{RENTIX}/listings", headers=KEY).json()["items"]}
    assert set(items) == {None, "linked-now", "n1"}  # v2 validated, not saved
    assert client.get(f"{RENTIX}/listings/{seeded[2]}", headers=KEY).status_code == 404


def test_bulk_all_failed_and_envelope(client: httpx.Client) -> None:
    url = f"{RENTIX}/listings/bulk"
    r = client.post(url, json={"operations": [{"op": "delete", "id": 5},
                                              {"op": "upsert"}]}, headers=KEY)
    assert_error(r, 422, "All operations failed")
    assert r.json()["summary"] == {"total": 2, "succeeded": 0, "failed": 2}
    assert len(r.json()["results"]) == 2
    too_many = [{"op": "validate", "externalId": f"x{i}"} for i in range(101)]
    assert_error(client.post(url, json={"operations": too_many}, headers=KEY), 400,
                 ["operations must contain no more than 100 elements"])
    assert client.post(url, json={"operations": too_many[:100]}, headers=KEY).status_code == 200
    assert client.post(url, json={"operations": []}, headers=KEY).status_code == 400


# -- rate limits ---------------------------------------------------------------------------------

def test_rate_limit_headers_and_429(client: httpx.Client) -> None:
    r = client.get(f"{RENTIX}/agency", headers=KEY)
    assert r.headers["X-RateLimit-Limit"] == "300"
    assert r.headers["X-RateLimit-Remaining"] == "299"
    reset = int(r.headers["X-RateLimit-Reset"])
    assert time.time() < reset <= time.time() + 61
    client.post("/_sandbox/rate-limits", json={"rentix_per_minute": 3})
    remaining = [client.get(f"{RENTIX}/agency", headers=KEY).headers["X-RateLimit-Remaining"]
                 for _ in range(2)]
    assert remaining == ["1", "0"]
    r = client.get(f"{RENTIX}/listings", headers=KEY)
    assert_error(r, 429, "Too Many Requests")
    assert r.headers["X-RateLimit-Remaining"] == "0" and "Retry-After" not in r.headers
    assert int(r.headers["X-RateLimit-Reset"]) == reset
    # another key has its own window
    client.post("/_sandbox/credentials", json={"rentix_api_key": "k2"})
    assert client.get(f"{RENTIX}/agency", headers={"X-API-Key": "k2"}).status_code == 200


def test_bulk_rate_limit(client: httpx.Client) -> None:
    client.post("/_sandbox/rate-limits", json={"rentix_bulk_per_minute": 2})
    body = {"operations": [{"op": "validate", "externalId": "x"}]}
    for left in ("1", "0"):
        r = client.post(f"{RENTIX}/listings/bulk", json=body, headers=KEY)
        assert r.status_code == 200 and r.headers["X-RateLimit-Limit"] == "2"
        assert r.headers["X-RateLimit-Remaining"] == left
    assert_error(client.post(f"{RENTIX}/listings/bulk", json=body, headers=KEY), 429,
                 "Too Many Requests")
    assert client.get(f"{RENTIX}/agency", headers=KEY).status_code == 200  # others still fine


def test_unknown_route(client: httpx.Client) -> None:
    r = client.get(f"{RENTIX}/nothing", headers=KEY)
    assert r.status_code == 404 and r.json()["statusCode"] == 404
