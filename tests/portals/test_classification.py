"""Classification of undocumented answers, and what the adapters put on the wire, against the
real sandbox over HTTP.

The odd answers (a gateway's HTML 502, a 418, unknown messages and error types, a token
endpoint without a token...) are sandbox faults (`POST /_sandbox/faults`), which answer a given
status, body and headers without touching state. What the adapters send is read back from the
sandbox journal (method, path, Idempotency-Key, parsed body), and from the sandbox accepting the
request at all: it checks the ApiKey / Bearer auth, the JSON content type and the token form.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest

from bridge.portals import Outcome, RentixAdapter, TravtusAdapter
from tests.portals.conftest import CLIENT_ID, CLIENT_SECRET
from tests.support.sandbox import Sandbox
from tests.support.servers import serve_app

SHORT_TTL = 1  # seconds: the adapter refreshes such a token ttl/4 = 0.25 s before it expires


def token_requests(journal: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in journal if e["path"] == "/oauth2/token"]


@pytest.mark.parametrize(("status", "body", "outcome", "error_type"), [
    (502, "<html>bad gateway</html>", Outcome.TRANSIENT, "server_error"),
    (418, {"statusCode": 418, "message": "teapot", "error": "I'm a teapot"},
     Outcome.DATA_INVALID, "http_418"),
    (409, {"statusCode": 409, "message": "Something new", "error": "Conflict"},
     Outcome.CONFLICT, "conflict"),
    (403, {"statusCode": 403, "message": "Forbidden resource", "error": "Forbidden"},
     Outcome.CREDENTIALS_INVALID, "forbidden"),
])
async def test_rentix_fallbacks_by_status(status: int, body: object, outcome: Outcome,
                                          error_type: str, rentix: RentixAdapter,
                                          sandbox: Sandbox) -> None:
    headers = {"Content-Type": "text/html"} if isinstance(body, str) else {}
    await sandbox.fault(portal="rentix", method="GET", path="/listings", status=status,
                        body=body, headers=headers)
    result = await rentix.list_page()
    assert (result.outcome, result.error_type, result.status) == (outcome, error_type, status)


async def test_rentix_sends_api_key_and_idempotency_key(rentix: RentixAdapter,
                                                        sandbox: Sandbox) -> None:
    payload = {"externalId": "x", "announcementStatus": "hidden", "announcementValue":
               Decimal("550.50")}
    # The sandbox refuses a missing/wrong key, both auth headers (400) and a non-JSON body (415).
    upserted = await rentix.upsert(payload, "idem-1")
    assert upserted.ok, upserted
    assert (await rentix.get_listing(upserted.body["id"])).ok
    # Without Authorization no key is left at all: it is not also sent as X-API-Key.
    bare = await rentix.request("GET", "/listings", headers={"Authorization": None})
    assert (bare.status, bare.error_type) == (401, "api_key_required")
    put, get, _ = await sandbox.journal("rentix")
    assert (put["method"], put["path"], put["status"]) == ("PUT", "/listings", 200)
    assert put["idempotency_key"] == "idem-1"
    assert (get["method"], get["status"], get["idempotency_key"]) == ("GET", 200, None)
    # The journal holds the parsed body, so `550.5` vs `550.50` on the wire is not visible here.
    value = put["body"]["announcementValue"]
    assert isinstance(value, float) and value == 550.5  # a JSON number, not a string


async def test_rentix_429_without_reset_header_falls_back_to_retry_after(
        rentix: RentixAdapter, sandbox: Sandbox) -> None:
    # The sandbox always sends its X-RateLimit-* headers; a fault can only blank the reset one.
    await sandbox.fault(portal="rentix", path="/listings", status=429, body={"statusCode": 429},
                        headers={"Retry-After": "30", "X-RateLimit-Reset": ""})
    result = await rentix.list_page()
    assert (result.outcome, result.status) == (Outcome.RATE_LIMITED, 429)
    assert result.retry_at is not None and abs(result.retry_at - time.time() - 30) < 2


@pytest.mark.parametrize(("status", "error_type", "outcome"), [
    (401, "no_such_type_yet", Outcome.CREDENTIALS_INVALID),
    (400, "no_such_type_yet", Outcome.DATA_INVALID),
    (502, None, Outcome.TRANSIENT),
    (429, None, Outcome.RATE_LIMITED),
    (409, "idempotency_key_in_use", Outcome.TRANSIENT),
    (401, "missing_unit_type", Outcome.DATA_INVALID),  # a 401 that is not about auth
])
async def test_travtus_classifies_by_type_then_status(status: int, error_type: str | None,
                                                      outcome: Outcome, travtus: TravtusAdapter,
                                                      sandbox: Sandbox) -> None:
    body = {"error": {"type": error_type, "message": "m"}} if error_type else "oops"
    await sandbox.fault(portal="travtus", path="/listings/find/", status=status, body=body)
    result = await travtus.find_page("g")
    assert result.outcome is outcome
    assert result.error_type == (error_type or f"http_{status}")
    assert result.status == status


async def test_travtus_token_request_is_form_encoded_client_credentials(
        travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    assert (await travtus.sync("g", [], "idem")).ok
    token_req, sync_req = await sandbox.journal("travtus")
    # The token endpoint reads only a form (a JSON body would be 400 invalid_request); the
    # journal shows a form as a dict. The raw byte order of the form is not recorded.
    assert (token_req["method"], token_req["path"], token_req["status"]) == (
        "POST", "/oauth2/token", 200)
    assert token_req["body"] == {"grant_type": "client_credentials", "client_id": CLIENT_ID,
                                 "client_secret": CLIENT_SECRET}
    # 200 means the sandbox accepted `Bearer <the token it just issued>`.
    assert (sync_req["method"], sync_req["path"], sync_req["status"]) == (
        "POST", "/listing/sync/", 200)
    assert sync_req["idempotency_key"] == "idem"
    assert sync_req["body"] == {"group_external_ref": "g", "listings": []}


async def test_travtus_token_endpoint_without_token_is_transient(
        travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    await sandbox.fault(portal="travtus", path="/oauth2/token", status=200,
                        body={"token_type": "Bearer"})
    result = await travtus.sync("g", [])
    assert (result.outcome, result.error_type) == (Outcome.TRANSIENT, "no_access_token")
    assert [e["path"] for e in await sandbox.journal("travtus")] == ["/oauth2/token"]


async def test_travtus_invalid_request_at_token_endpoint_is_credentials(
        travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    body = {"error": {"type": "invalid_request", "message": "client_id is required"}}
    await sandbox.fault(portal="travtus", path="/oauth2/token", status=400, body=body)
    result = await travtus.sync("g", [])
    assert (result.outcome, result.error_type) == (Outcome.CREDENTIALS_INVALID, "invalid_request")
    assert [e["path"] for e in await sandbox.journal("travtus")] == ["/oauth2/token"]


@pytest.fixture(scope="module")
def short_token_url() -> Iterator[str]:
    """A second sandbox whose Travtus tokens live SHORT_TTL seconds."""
    from bridge.sandbox.app import SandboxSettings, create_app

    with serve_app(create_app(SandboxSettings(publish_delay_s=0, token_ttl=SHORT_TTL))) as url:
        yield url


@pytest.fixture
async def short_token_sandbox(short_token_url: str) -> AsyncIterator[Sandbox]:
    box = Sandbox(short_token_url)
    await box.reset()
    yield box
    await box.aclose()


async def test_short_lived_tokens_are_refreshed_early(short_token_sandbox: Sandbox) -> None:
    box = short_token_sandbox
    travtus = TravtusAdapter("travtus", box.travtus_url, box.token_url, CLIENT_ID, CLIENT_SECRET)
    try:
        assert (await travtus.sync("g", [])).ok
        # Past the refresh point (0.75 s) but before the sandbox expires the token (1 s): a
        # client that refreshed only on expiry would reuse it here.
        await asyncio.sleep(0.8)
        assert (await travtus.sync("g", [])).ok
    finally:
        await travtus.aclose()
    journal = await box.journal("travtus")
    assert len(token_requests(journal)) == 2
    assert [(e["path"], e["status"]) for e in journal] == [
        ("/oauth2/token", 200), ("/listing/sync/", 200)] * 2  # refreshed before any 401
