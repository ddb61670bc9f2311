"""Classification of answers the sandbox cannot easily produce, with a stub transport."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest

from bridge.portals import Outcome, RentixAdapter, TravtusAdapter

Handler = Callable[[httpx.Request], httpx.Response]


def rentix_with(handler: Handler) -> RentixAdapter:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return RentixAdapter("rentix", "http://rentix.test/api/v1", "key", client=client)


def travtus_with(handler: Handler) -> TravtusAdapter:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return TravtusAdapter("travtus", "http://travtus.test", "http://travtus.test/oauth2/token",
                          "id", "secret", client=client)


def token_or(answer: httpx.Response) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/token":
            return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer",
                                             "expires_in": 3600})
        return answer
    return handler


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
                                          error_type: str) -> None:
    kwargs = {"json": body} if isinstance(body, dict) else {"text": body}
    rentix = rentix_with(lambda r: httpx.Response(status, **kwargs))
    result = await rentix.list_page()
    assert (result.outcome, result.error_type, result.status) == (outcome, error_type, status)


async def test_rentix_sends_api_key_and_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": 1})

    rentix = rentix_with(handler)
    payload = {"externalId": "x", "announcementStatus": "hidden", "announcementValue":
               Decimal("550.50")}
    await rentix.upsert(payload, "idem-1")
    await rentix.get_listing(1)
    assert seen[0].headers["Authorization"] == "ApiKey key"
    assert "X-API-Key" not in seen[0].headers
    assert seen[0].headers["Idempotency-Key"] == "idem-1"
    assert seen[0].headers["Content-Type"] == "application/json"
    assert "Idempotency-Key" not in seen[1].headers
    assert b'"announcementValue":550.5' in seen[0].content


async def test_rentix_429_without_reset_header_falls_back_to_retry_after() -> None:
    rentix = rentix_with(lambda r: httpx.Response(429, headers={"Retry-After": "30"},
                                                  json={"statusCode": 429}))
    result = await rentix.list_page()
    assert result.outcome is Outcome.RATE_LIMITED
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
                                                      outcome: Outcome) -> None:
    body = {"error": {"type": error_type, "message": "m"}} if error_type else None
    answer = httpx.Response(status, json=body) if body else httpx.Response(status, text="oops")
    travtus = travtus_with(token_or(answer))
    result = await travtus.find_page("g")
    assert result.outcome is outcome
    assert result.error_type == (error_type or f"http_{status}")


async def test_travtus_token_request_is_form_encoded_client_credentials() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return token_or(httpx.Response(200, json={"success": True}))(request)

    travtus = travtus_with(handler)
    assert (await travtus.sync("g", [], "idem")).ok
    token_req, sync_req = seen
    assert token_req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert token_req.content == b"grant_type=client_credentials&client_id=id&client_secret=secret"
    assert sync_req.headers["Authorization"] == "Bearer t"
    assert sync_req.headers["Idempotency-Key"] == "idem"
    assert sync_req.url.path == "/listing/sync/"


async def test_travtus_token_endpoint_without_token_is_transient() -> None:
    travtus = travtus_with(lambda r: httpx.Response(200, json={"token_type": "Bearer"}))
    result = await travtus.sync("g", [])
    assert (result.outcome, result.error_type) == (Outcome.TRANSIENT, "no_access_token")


async def test_travtus_invalid_request_at_token_endpoint_is_credentials() -> None:
    body = {"error": {"type": "invalid_request", "message": "client_id is required"}}
    travtus = travtus_with(lambda r: httpx.Response(400, json=body))
    result = await travtus.sync("g", [])
    assert (result.outcome, result.error_type) == (Outcome.CREDENTIALS_INVALID, "invalid_request")


async def test_short_lived_tokens_are_refreshed_early() -> None:
    issued: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/token":
            issued.append(1)
            return httpx.Response(200, json={"access_token": f"t{len(issued)}",
                                             "expires_in": 0})
        return httpx.Response(200, json={"success": True})

    travtus = travtus_with(handler)
    await travtus.sync("g", [])
    await travtus.sync("g", [])
    assert len(issued) == 2  # a token with no life left is never reused
