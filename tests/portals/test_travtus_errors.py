"""Every documented Travtus error, produced by the sandbox and classified by the adapter.

Travtus answers most data errors with 401, so these cases also prove that classification
follows `error.type` and not the status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bridge.portals import Outcome, Result, TravtusAdapter
from tests.portals.conftest import CLIENT_ID
from tests.support.canonical import listing
from tests.support.sandbox import Sandbox
from tests.support.servers import free_port

Call = Callable[[TravtusAdapter, Sandbox], Awaitable[Result]]
BATH = [{"has_shower_or_bath": True, "has_sink": True, "has_toilet": True}]


@dataclass
class Case:
    call: Call
    outcome: Outcome
    error_type: str | None  # None: whatever the fault's default body says
    status: int | None
    field: str | None = None
    listing_ref: str | None = None


def good(t: TravtusAdapter, ref: str = "ok-1") -> dict[str, Any]:
    return t.map_listing(listing(external_ref=ref))


def bad_listing(**changes: Any) -> Call:
    """A sync of one good listing and one broken one, bypassing local validation."""
    async def call(t: TravtusAdapter, s: Sandbox) -> Result:
        broken = good(t, "bad-1")
        for key, value in changes.items():
            if value is None:
                broken.pop(key, None)
            else:
                broken[key] = value
        return await t.sync("north", [good(t), broken], check=False)
    return call


async def raw_sync(t: TravtusAdapter, body: dict[str, Any]) -> Result:
    return await t.request("POST", "/listing/sync/", json=body)


async def missing_authorization(t: TravtusAdapter, s: Sandbox) -> Result:
    return await t.request("POST", "/listing/sync/", json={"group_external_ref": "north"},
                           authorize=False)


async def invalid_authorization(t: TravtusAdapter, s: Sandbox) -> Result:
    return await t.request("POST", "/listing/sync/", json={"group_external_ref": "north"},
                           headers={"Authorization": "Bearer forged"})


async def expired_twice(t: TravtusAdapter, s: Sandbox) -> Result:
    body = {"error": {"type": "expired_token", "message": "expired"}}
    await s.fault(portal="travtus", path="/listing/sync/", status=401, body=body, count=2)
    result = await t.sync("north", [good(t)])
    assert t.tokens.fetches == 2  # refreshed once, retried once, then given up
    return result


async def invalid_client(t: TravtusAdapter, s: Sandbox) -> Result:
    wrong = TravtusAdapter("travtus", s.travtus_url, s.token_url, CLIENT_ID, "wrong")
    try:
        return await wrong.sync("north", [good(wrong)])
    finally:
        await wrong.aclose()


async def token_request_incomplete(t: TravtusAdapter, s: Sandbox) -> Result:
    blank = TravtusAdapter("travtus", s.travtus_url, s.token_url, "", "")
    try:
        return await blank.sync("north", [good(blank)])
    finally:
        await blank.aclose()


async def rotated_credentials(t: TravtusAdapter, s: Sandbox) -> Result:
    assert (await t.sync("north", [good(t)])).ok
    await s.credentials(travtus_client_secret="rotated")  # old tokens become invalid
    return await t.sync("north", [good(t)])


async def both_groups(t: TravtusAdapter, s: Sandbox) -> Result:
    return await raw_sync(t, {"group_id": "1", "group_external_ref": "north", "listings": []})


async def no_group(t: TravtusAdapter, s: Sandbox) -> Result:
    return await raw_sync(t, {"listings": [good(t)]})


async def denied_group(t: TravtusAdapter, s: Sandbox) -> Result:
    await s.deny_group("north")
    return await t.sync("north", [good(t)])


async def unknown_group_id(t: TravtusAdapter, s: Sandbox) -> Result:
    return await raw_sync(t, {"group_id": "no-such-group", "listings": []})


async def find_no_group(t: TravtusAdapter, s: Sandbox) -> Result:
    return await t.request("POST", "/listings/find/", json={"after-id": "1"})


async def find_both_groups(t: TravtusAdapter, s: Sandbox) -> Result:
    return await t.request("POST", "/listings/find/",
                           json={"group_id": "1", "group_external_ref": "north"})


async def find_denied(t: TravtusAdapter, s: Sandbox) -> Result:
    await s.deny_group("north")
    return await t.find_page("north")


async def find_nothing(t: TravtusAdapter, s: Sandbox) -> Result:
    return await t.find_page("empty-group")


async def create_no_group(t: TravtusAdapter, s: Sandbox) -> Result:
    return await t.request("POST", "/listing/", json=good(t))


async def create_bad_unit_type(t: TravtusAdapter, s: Sandbox) -> Result:
    group_id = await s.travtus_group_id("north")
    return await t.create_listing(group_id, {**good(t), "unit_type": "house"})


async def create_no_listing_url(t: TravtusAdapter, s: Sandbox) -> Result:
    body = good(t)
    body.pop("listing_url")
    return await t.create_listing(await s.travtus_group_id("north"), body)


async def create_unknown_group(t: TravtusAdapter, s: Sandbox) -> Result:
    return await t.create_listing("no-such-group", good(t))


async def delete_unknown(t: TravtusAdapter, s: Sandbox) -> Result:
    return await t.delete_listing("999999")


async def key_reused(t: TravtusAdapter, s: Sandbox) -> Result:
    assert (await t.sync("north", [good(t)], "k1")).ok
    return await t.sync("north", [good(t, "other")], "k1")


async def rate_limited(t: TravtusAdapter, s: Sandbox) -> Result:
    await s.fault(portal="travtus", path="/listing/sync/", status=429, count=1)
    return await t.sync("north", [good(t)])


async def server_error(t: TravtusAdapter, s: Sandbox) -> Result:
    await s.fault(portal="travtus", path="/listing/sync/", status=500)
    return await t.sync("north", [good(t)])


async def token_endpoint_down(t: TravtusAdapter, s: Sandbox) -> Result:
    await s.fault(portal="travtus", path="/oauth2/token", status=503, duration_s=30)
    return await t.sync("north", [good(t)])


async def timeout(t: TravtusAdapter, s: Sandbox) -> Result:
    slow = TravtusAdapter("travtus", s.travtus_url, s.token_url, CLIENT_ID, "sandbox",
                          timeout=0.3)
    try:
        await slow.tokens.get()
        await s.fault(portal="travtus", path="/listing/sync/", latency_ms=1500, count=1)
        return await slow.sync("north", [good(slow)])
    finally:
        await slow.aclose()


async def connection_refused(t: TravtusAdapter, s: Sandbox) -> Result:
    url = f"http://127.0.0.1:{free_port()}"
    dead = TravtusAdapter("travtus", url, f"{url}/oauth2/token", CLIENT_ID, "sandbox")
    try:
        return await dead.sync("north", [good(dead)])
    finally:
        await dead.aclose()


D, C = Outcome.DATA_INVALID, Outcome.CREDENTIALS_INVALID
CASES: dict[str, Case] = {
    # authorization and tokens
    "400 missing_authorization": Case(missing_authorization, C, "missing_authorization", 400),
    "401 invalid_authorization": Case(invalid_authorization, C, "invalid_authorization", 401),
    "401 invalid_authorization after rotation": Case(rotated_credentials, C,
                                                     "invalid_authorization", 401),
    "401 expired_token twice": Case(expired_twice, Outcome.TOKEN_EXPIRED, "expired_token", 401),
    "401 invalid_client": Case(invalid_client, C, "invalid_client", 401),
    "400 invalid_request (token)": Case(token_request_incomplete, C, "invalid_request", 400),
    # sync: request level
    "400 both_group_identifiers_provided": Case(both_groups, D,
                                                "both_group_identifiers_provided", 400),
    "400 no_group_provided": Case(no_group, D, "no_group_provided", 400),
    "401 no_access_to_group (denied)": Case(denied_group, C, "no_access_to_group", 401),
    "401 no_access_to_group (unknown id)": Case(unknown_group_id, C, "no_access_to_group", 401),
    # sync: listing rules
    "401 no_external_reference": Case(bad_listing(external_reference=None), D,
                                      "no_external_reference", 401, "external_reference"),
    "400 both_bathroom_attributes_provided": Case(
        bad_listing(bathrooms=BATH), D, "both_bathroom_attributes_provided", 400,
        "number_of_bathrooms", "bad-1"),
    "401 no_bathroom_attributes_provided": Case(
        bad_listing(number_of_bathrooms=None), D, "no_bathroom_attributes_provided", 401,
        "number_of_bathrooms", "bad-1"),
    "401 invalid_number_of_bathrooms": Case(
        bad_listing(number_of_bathrooms=0.5), D, "invalid_number_of_bathrooms", 401,
        "number_of_bathrooms", "bad-1"),
    "401 missing_unit_type": Case(bad_listing(unit_type=None), D, "missing_unit_type", 401,
                                  "unit_type", "bad-1"),
    "401 invalid_unit_type": Case(bad_listing(unit_type="house"), D, "invalid_unit_type", 401,
                                  "unit_type", "bad-1"),
    "401 missing_listing_url": Case(bad_listing(listing_url=None), D, "missing_listing_url",
                                    401, "listing_url", "bad-1"),
    "401 date_format_invalid (move_in_date)": Case(
        bad_listing(move_in_date="2026-02-30"), D, "date_format_invalid", 401, "move_in_date",
        "bad-1"),
    "401 date_format_invalid (active_date)": Case(
        bad_listing(active_date="12/01/2026"), D, "date_format_invalid", 401, "active_date",
        "bad-1"),
    "400 invalid_address": Case(bad_listing(address={"address_line_1": "1 Main St"}), D,
                                "invalid_address", 400, "address.state", "bad-1"),
    # find
    "400 find no_group_identifier_provided": Case(find_no_group, D,
                                                  "no_group_identifier_provided", 400),
    "400 find both_group_identifiers_provided": Case(find_both_groups, D,
                                                     "both_group_identifiers_provided", 400),
    "401 find no_access_to_group": Case(find_denied, C, "no_access_to_group", 401),
    "404 find not_found": Case(find_nothing, Outcome.NOT_FOUND, "not_found", 404),
    # single create and delete
    "400 create no_group_provided": Case(create_no_group, D, "no_group_provided", 400),
    "400 create missing_or_invalid_unit_type": Case(create_bad_unit_type, D,
                                                    "missing_or_invalid_unit_type", 400),
    "400 create no_listing_url": Case(create_no_listing_url, D, "no_listing_url", 400),
    "401 create no_access_to_group": Case(create_unknown_group, C, "no_access_to_group", 401),
    "401 delete not_authorized": Case(delete_unknown, C, "not_authorized", 401),
    # idempotency, limits, failures
    "422 idempotency_key_reused": Case(key_reused, Outcome.CONFLICT, "idempotency_key_reused",
                                       422),
    "429 rate_limited": Case(rate_limited, Outcome.RATE_LIMITED, "rate_limited", 429),
    "500 server error": Case(server_error, Outcome.TRANSIENT, None, 500),
    "503 token endpoint down": Case(token_endpoint_down, Outcome.TRANSIENT, None, 503),
    "timeout": Case(timeout, Outcome.TRANSIENT, "timeout", None),
    "connection refused": Case(connection_refused, Outcome.TRANSIENT, "connection_error", None),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_travtus_error_is_classified(name: str, travtus: TravtusAdapter,
                                           sandbox: Sandbox) -> None:
    case = CASES[name]
    result = await case.call(travtus, sandbox)
    assert (result.outcome, result.status) == (case.outcome, case.status), result
    if case.error_type:
        assert result.error_type == case.error_type, result
    if case.field:
        assert result.field == case.field, result
    if case.listing_ref:
        assert result.listing_ref == case.listing_ref, result


async def test_a_failed_sync_changes_nothing(travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    assert (await travtus.sync("north", [good(travtus, "keep")])).ok
    result = await bad_listing(unit_type="house")(travtus, sandbox)
    assert result.outcome is Outcome.DATA_INVALID
    stored = await sandbox.travtus_listings("north")
    assert [x["external_reference"] for x in stored] == ["keep"]


async def test_retry_after_sets_retry_at(travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    await sandbox.fault(portal="travtus", path="/listing/sync/", status=429, count=1,
                        headers={"Retry-After": "7"})
    result = await travtus.sync("north", [good(travtus)])
    assert result.outcome is Outcome.RATE_LIMITED
    assert result.retry_at is not None and abs(result.retry_at - (time.time() + 7)) < 2
    plain = await rate_limited(travtus, sandbox)
    assert plain.retry_at is None


async def test_recovers_after_an_invalid_token(travtus: TravtusAdapter,
                                               sandbox: Sandbox) -> None:
    result = await rotated_credentials(travtus, sandbox)
    assert result.error_type == "invalid_authorization"
    await sandbox.credentials(travtus_client_secret="sandbox")
    assert (await travtus.sync("north", [good(travtus)])).ok  # a new token was fetched
    assert travtus.tokens.fetches == 2


async def test_key_in_flight_is_transient(travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    """Two concurrent syncs with one key: whichever arrives second finds it in flight."""
    await travtus.tokens.get()
    await sandbox.fault(portal="travtus", path="/listing/sync/", latency_ms=500)
    listings = [good(travtus)]
    results = await asyncio.gather(*(travtus.sync("north", listings, "busy") for _ in range(2)))
    busy = [r for r in results if not r.ok]
    assert len(busy) == 1, results
    assert (busy[0].outcome, busy[0].error_type, busy[0].status) == (
        Outcome.TRANSIENT, "idempotency_key_in_use", 409), busy
