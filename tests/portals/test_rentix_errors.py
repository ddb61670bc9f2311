"""Every documented Rentix error, produced by the sandbox and classified by the adapter.

Each case sets the sandbox up (admin API: switches, faults, limits), makes the real bad
request through the adapter (raw paths or check=False where local validation would stop it),
and checks the classification.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from bridge.portals import Outcome, RentixAdapter, Result
from tests.portals.conftest import API_KEY
from tests.support.canonical import FULL
from tests.support.sandbox import Sandbox
from tests.support.servers import free_port

Call = Callable[[RentixAdapter, Sandbox], Awaitable[Result]]


@dataclass
class Case:
    call: Call
    outcome: Outcome
    error_type: str
    status: int | None
    field: str | None = None


def full(rentix: RentixAdapter) -> dict:
    return rentix.map_listing(FULL)


async def both_auth_headers(r: RentixAdapter, s: Sandbox) -> Result:
    return await r.request("GET", "/listings", headers={"X-API-Key": API_KEY})


async def no_key(r: RentixAdapter, s: Sandbox) -> Result:
    return await r.request("GET", "/listings", headers={"Authorization": None})


async def wrong_key(r: RentixAdapter, s: Sandbox) -> Result:
    return await r.request("GET", "/listings", headers={"Authorization": "ApiKey nope"})


async def suspended(r: RentixAdapter, s: Sandbox) -> Result:
    await s.agency(suspended=True)
    return await r.upsert(full(r))


async def crm_disabled(r: RentixAdapter, s: Sandbox) -> Result:
    await s.agency(crm_enabled=False)
    return await r.list_page()


async def not_json_content_type(r: RentixAdapter, s: Sandbox) -> Result:
    return await r.request("PUT", "/listings", content=b'{"externalId": "x"}',
                           headers={"Content-Type": "text/plain"})


async def too_large(r: RentixAdapter, s: Sandbox) -> Result:
    return await r.upsert({"externalId": "big", "announcementDescription": "x" * 530_000},
                          check=False)


async def invalid_json(r: RentixAdapter, s: Sandbox) -> Result:
    return await r.request("PUT", "/listings", content=b'{"externalId": ',
                           headers={"Content-Type": "application/json"})


async def bad_enum(r: RentixAdapter, s: Sandbox) -> Result:
    return await r.upsert({**full(r), "propertyType": "spaceship"}, check=False)


async def too_few_photos(r: RentixAdapter, s: Sandbox) -> Result:
    payload = full(r)
    return await r.upsert({**payload, "files": payload["files"][:2]}, check=False)


async def limit_over_100(r: RentixAdapter, s: Sandbox) -> Result:
    return await r.list_page(limit=101)


async def unknown_id(r: RentixAdapter, s: Sandbox) -> Result:
    return await r.get_listing(999_999)


async def unknown_external_id(r: RentixAdapter, s: Sandbox) -> Result:
    return await r.get_by_external_id("nobody/with spaces")


async def link_unknown(r: RentixAdapter, s: Sandbox) -> Result:
    return await r.link(999_999, "crm-1")


async def link_already_has_id(r: RentixAdapter, s: Sandbox) -> Result:
    [listing_id] = await s.seed_rentix([{"externalId": "crm-1", "announcementStatus": "hidden"}])
    return await r.link(listing_id, "crm-2")


async def link_id_taken(r: RentixAdapter, s: Sandbox) -> Result:
    _, free = await s.seed_rentix([{"externalId": "crm-1", "announcementStatus": "hidden"},
                                   {"announcementStatus": "hidden"}])
    return await r.link(free, "crm-1")


async def unlink_unlinked(r: RentixAdapter, s: Sandbox) -> Result:
    [listing_id] = await s.seed_rentix([{"announcementStatus": "hidden"}])
    return await r.unlink(listing_id)


async def bulk_all_failed(r: RentixAdapter, s: Sandbox) -> Result:
    return await r.bulk([{"op": "upsert", "externalId": "b", "propertyType": "spaceship"}])


async def bulk_over_100(r: RentixAdapter, s: Sandbox) -> Result:
    ops = [{"op": "validate", "externalId": f"v{i}"} for i in range(101)]
    return await r.request("POST", "/listings/bulk", json={"operations": ops})


async def key_reused(r: RentixAdapter, s: Sandbox) -> Result:
    assert (await r.upsert(full(r), "k1")).ok
    return await r.upsert({**full(r), "announcementValue": 1}, "k1")


async def rate_limited(r: RentixAdapter, s: Sandbox) -> Result:
    await s.rate_limits(rentix_per_minute=2)
    for _ in range(2):
        assert (await r.list_page()).ok
    return await r.list_page()


async def bulk_rate_limited(r: RentixAdapter, s: Sandbox) -> Result:
    await s.rate_limits(rentix_bulk_per_minute=1)
    op = [{"op": "validate", "externalId": "v"}]
    assert (await r.bulk(op)).status in (200, 422)
    return await r.bulk(op)


async def server_error(r: RentixAdapter, s: Sandbox) -> Result:
    await s.fault(portal="rentix", method="PUT", path="/listings", status=500)
    return await r.upsert(full(r), "k-500")


async def unavailable(r: RentixAdapter, s: Sandbox) -> Result:
    await s.fault(portal="rentix", status=503, duration_s=30)
    return await r.list_page()


async def timeout(r: RentixAdapter, s: Sandbox) -> Result:
    await s.fault(portal="rentix", path="/listings", latency_ms=1500, count=1)
    slow = RentixAdapter("rentix", s.rentix_url, API_KEY, timeout=0.3)
    try:
        return await slow.list_page()
    finally:
        await slow.aclose()


async def connection_refused(r: RentixAdapter, s: Sandbox) -> Result:
    dead = RentixAdapter("rentix", f"http://127.0.0.1:{free_port()}/rentix/api/v1", API_KEY)
    try:
        return await dead.list_page()
    finally:
        await dead.aclose()


CASES: dict[str, Case] = {
    "400 both auth headers": Case(both_auth_headers, Outcome.CREDENTIALS_INVALID,
                                  "multiple_auth_methods", 400),
    "401 no key": Case(no_key, Outcome.CREDENTIALS_INVALID, "api_key_required", 401),
    "401 wrong key": Case(wrong_key, Outcome.CREDENTIALS_INVALID, "invalid_api_key", 401),
    "403 agency suspended": Case(suspended, Outcome.CREDENTIALS_INVALID, "agency_suspended", 403),
    "403 crm disabled": Case(crm_disabled, Outcome.CREDENTIALS_INVALID, "crm_not_enabled", 403),
    "415 not json": Case(not_json_content_type, Outcome.DATA_INVALID,
                         "unsupported_media_type", 415),
    "413 too large": Case(too_large, Outcome.DATA_INVALID, "payload_too_large", 413),
    "400 invalid json": Case(invalid_json, Outcome.DATA_INVALID, "invalid_json", 400),
    "400 validation enum": Case(bad_enum, Outcome.DATA_INVALID, "validation_failed", 400,
                                "propertyType"),
    "400 validation publish photos": Case(too_few_photos, Outcome.DATA_INVALID,
                                          "validation_failed", 400, "files"),
    "400 limit over 100": Case(limit_over_100, Outcome.DATA_INVALID, "validation_failed", 400,
                               "limit"),
    "404 unknown id": Case(unknown_id, Outcome.NOT_FOUND, "listing_not_found", 404),
    "404 unknown external id": Case(unknown_external_id, Outcome.NOT_FOUND,
                                    "listing_not_found", 404),
    "404 link unknown": Case(link_unknown, Outcome.NOT_FOUND, "listing_not_found", 404),
    "409 listing already has external id": Case(link_already_has_id, Outcome.CONFLICT,
                                                 "listing_already_has_external_id", 409),
    "409 external id already linked": Case(link_id_taken, Outcome.CONFLICT,
                                           "external_id_already_linked", 409),
    "400 listing has no external id": Case(unlink_unlinked, Outcome.CONFLICT,
                                           "no_external_id", 400),
    "422 bulk all failed": Case(bulk_all_failed, Outcome.DATA_INVALID, "all_operations_failed",
                                422, "propertyType"),
    "400 bulk over 100": Case(bulk_over_100, Outcome.DATA_INVALID, "validation_failed", 400,
                              "operations"),
    "422 idempotency key reused": Case(key_reused, Outcome.CONFLICT, "idempotency_key_reused",
                                       422),
    "429 rate limited": Case(rate_limited, Outcome.RATE_LIMITED, "rate_limited", 429),
    "429 bulk rate limited": Case(bulk_rate_limited, Outcome.RATE_LIMITED, "rate_limited", 429),
    "500 server error": Case(server_error, Outcome.TRANSIENT, "server_error", 500),
    "503 outage": Case(unavailable, Outcome.TRANSIENT, "server_error", 503),
    "timeout": Case(timeout, Outcome.TRANSIENT, "timeout", None),
    "connection refused": Case(connection_refused, Outcome.TRANSIENT, "connection_error", None),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_rentix_error_is_classified(name: str, rentix: RentixAdapter,
                                          sandbox: Sandbox) -> None:
    case = CASES[name]
    result = await case.call(rentix, sandbox)
    assert (result.outcome, result.error_type, result.status) == (
        case.outcome, case.error_type, case.status), result
    if case.field:
        assert result.field == case.field, result
    if result.status:
        assert result.message, result


async def test_429_retry_at_is_the_window_reset(rentix: RentixAdapter, sandbox: Sandbox) -> None:
    result = await rate_limited(rentix, sandbox)
    assert result.retry_at is not None
    assert result.retry_at == rentix.rate_limit.reset
    assert time.time() - 1 < result.retry_at <= time.time() + 61
    assert rentix.rate_limit.remaining == 0


async def test_key_in_flight_is_transient(rentix: RentixAdapter, sandbox: Sandbox) -> None:
    """Two concurrent requests with one key: whichever arrives second finds it in flight."""
    await sandbox.fault(portal="rentix", method="PUT", path="/listings", latency_ms=500)
    payload = rentix.map_listing(FULL)
    results = await asyncio.gather(*(rentix.upsert(payload, "in-flight") for _ in range(2)))
    busy = [r for r in results if not r.ok]
    assert len(busy) == 1, results
    assert (busy[0].outcome, busy[0].error_type, busy[0].status) == (
        Outcome.TRANSIENT, "idempotency_key_in_use", 409), busy


async def test_5xx_is_not_stored_so_a_retry_runs(rentix: RentixAdapter, sandbox: Sandbox) -> None:
    await sandbox.fault(portal="rentix", method="PUT", path="/listings", status=500, count=1)
    payload = rentix.map_listing(FULL)
    assert (await rentix.upsert(payload, "retry-me")).outcome is Outcome.TRANSIENT
    retried = await rentix.upsert(payload, "retry-me")
    assert retried.ok and retried.body["created"] is True
