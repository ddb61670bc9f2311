"""Idempotency-Key on both portals, and injected faults, latency and outages."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.servers import wait_until

from .conftest import KEY, RENTIX, bearer, publishable, sync_listing

SYNC = "/travtus/listing/sync/"


def journal(client: httpx.Client, portal: str | None = None) -> list[dict[str, Any]]:
    params = {"portal": portal} if portal else {}
    return list(client.get("/_sandbox/journal", params=params).json()["requests"])


def rentix_put(client: httpx.Client, body: dict[str, Any], key: str) -> httpx.Response:
    return client.put(f"{RENTIX}/listings", json=body, headers={**KEY, "Idempotency-Key": key})


def travtus_sync(client: httpx.Client, headers: dict[str, str], body: dict[str, Any],
                 key: str) -> httpx.Response:
    return client.post(SYNC, json=body, headers={**headers, "Idempotency-Key": key})


# -- replay and mismatch -----------------------------------------------------------------------

def test_rentix_replay_has_no_second_effect(client: httpx.Client) -> None:
    first = rentix_put(client, publishable("a"), "k-1")
    again = rentix_put(client, publishable("a"), "k-1")
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.json()["created"] is True
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["X-RateLimit-Remaining"] == "298"  # replays still count
    listing = client.get(f"{RENTIX}/listings/external/a", headers=KEY).json()
    assert listing["createdAt"] == listing["updatedAt"]  # not written twice
    assert [e["replayed"] for e in journal(client, "rentix")] == [False, True, False]
    # the same body with keys in another order is the same request
    reordered = dict(reversed(list(publishable("a").items())))
    assert rentix_put(client, reordered, "k-1").headers.get("Idempotent-Replayed") == "true"
    # a new key runs again (an update this time)
    assert rentix_put(client, publishable("a"), "k-2").json()["updated"] is True


def test_rentix_stored_errors_replay_too(client: httpx.Client) -> None:
    first = rentix_put(client, {"externalId": "a", "announcementStatus": "active"}, "k")
    assert first.status_code == 400
    again = rentix_put(client, {"externalId": "a", "announcementStatus": "active"}, "k")
    assert again.status_code == 400 and again.headers["Idempotent-Replayed"] == "true"


def test_rentix_key_with_another_body(client: httpx.Client) -> None:
    rentix_put(client, {"externalId": "a"}, "k")
    r = rentix_put(client, {"externalId": "b"}, "k")
    assert r.status_code == 422
    assert r.json() == {"statusCode": 422, "error": "Unprocessable Entity",
                        "message": "Idempotency-Key reused with a different request body"}
    assert client.get(f"{RENTIX}/listings/external/b", headers=KEY).status_code == 404
    # other writes are covered as well
    url = f"{RENTIX}/listings/1/link"
    headers = {**KEY, "Idempotency-Key": "k"}
    assert client.post(url, json={"externalId": "z"}, headers=headers).status_code == 422


def test_keys_are_scoped_per_credential(client: httpx.Client) -> None:
    rentix_put(client, {"externalId": "a"}, "k")
    client.post("/_sandbox/credentials", json={"rentix_api_key": "other"})
    r = client.put(f"{RENTIX}/listings", json={"externalId": "b"},
                   headers={"X-API-Key": "other", "Idempotency-Key": "k"})
    assert r.status_code == 200 and r.json()["created"] is True


def test_travtus_replay_and_mismatch(client: httpx.Client) -> None:
    headers = bearer(client)
    body = {"group_external_ref": "g", "listings": [sync_listing("a")]}
    assert travtus_sync(client, headers, body, "t-1").json() == {"success": True}
    # a change made in between is not undone by the replay
    client.post("/_sandbox/travtus/listings", json={"group": "g",
                                                    "listings": [sync_listing("b")]})
    r = travtus_sync(client, headers, body, "t-1")
    assert r.status_code == 200 and r.headers["Idempotent-Replayed"] == "true"
    refs = client.get("/_sandbox/travtus/listings?group=g").json()["listings"]
    assert {x["external_reference"] for x in refs} == {"a", "b"}
    r = travtus_sync(client, headers, {**body, "listings": []}, "t-1")
    assert r.status_code == 422 and r.json()["error"]["type"] == "idempotency_key_reused"
    entries = journal(client, "travtus")
    assert [(e["idempotency_key"], e["replayed"]) for e in entries[-3:]] == [
        ("t-1", False), ("t-1", True), ("t-1", False)]


# -- in flight -----------------------------------------------------------------------------------

def _in_flight(client: httpx.Client, portal: str, path: str,
               send: Any) -> tuple[httpx.Response, httpx.Response, httpx.Response]:
    """Hold a keyed request in a latency fault; send the same one meanwhile, then once more."""
    client.post("/_sandbox/faults", json={"portal": portal, "path": path, "latency_ms": 1500,
                                          "count": 1})
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=str(client.base_url),
                                                     timeout=10) as other:
        first = pool.submit(send, other)
        # the fault is used up as soon as the first request reached it, holding the key
        wait_until(lambda: client.get("/_sandbox/faults").json()["faults"] == [], timeout=5)
        second = send(client)
        first_answer = first.result(timeout=10)
    return first_answer, second, send(client)


def test_rentix_in_flight(client: httpx.Client) -> None:
    def send(c: httpx.Client) -> httpx.Response:
        return rentix_put(c, {"externalId": "slow"}, "held")

    started = time.monotonic()
    first, second, third = _in_flight(client, "rentix", "/listings", send)
    assert second.status_code == 409, second.text
    assert second.json()["message"] == \
        "A request with this Idempotency-Key is still being processed"
    assert time.monotonic() - started >= 1.4
    assert first.status_code == 200 and first.json()["created"] is True
    assert third.headers["Idempotent-Replayed"] == "true" and third.json() == first.json()


def test_travtus_in_flight(client: httpx.Client) -> None:
    headers = bearer(client)
    body = {"group_external_ref": "g", "listings": [sync_listing("a")]}

    def send(c: httpx.Client) -> httpx.Response:
        return travtus_sync(c, headers, body, "held")

    first, second, third = _in_flight(client, "travtus", "/listing/sync", send)
    assert second.status_code == 409
    assert second.json()["error"]["type"] == "idempotency_key_in_use"
    assert first.status_code == 200 and third.headers["Idempotent-Replayed"] == "true"


# -- retryable answers are not stored ----------------------------------------------------------

@pytest.mark.parametrize("status", [500, 503, 429])
def test_retryable_answers_are_not_stored(client: httpx.Client, status: int) -> None:
    client.post("/_sandbox/faults", json={"portal": "rentix", "method": "PUT", "status": status,
                                          "count": 1})
    failed = rentix_put(client, {"externalId": "a"}, "k")
    assert failed.status_code == status
    assert failed.json()["statusCode"] == status
    assert client.get(f"{RENTIX}/listings/external/a", headers=KEY).status_code == 404
    retried = rentix_put(client, {"externalId": "a"}, "k")
    assert retried.status_code == 200 and retried.json()["created"] is True
    assert "Idempotent-Replayed" not in retried.headers


# -- faults --------------------------------------------------------------------------------------

def test_fault_default_bodies_in_each_portal_format(client: httpx.Client) -> None:
    for portal in ("rentix", "travtus"):
        client.post("/_sandbox/faults", json={"portal": portal, "status": 503})
    r = client.get(f"{RENTIX}/agency", headers=KEY)
    assert r.status_code == 503
    assert r.json() == {"statusCode": 503, "message": "Service Unavailable",
                        "error": "Service Unavailable"}
    r = client.post("/travtus/oauth2/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"


def test_fault_with_body_headers_and_count(client: httpx.Client) -> None:
    client.post("/_sandbox/faults", json={
        "portal": "travtus", "method": "post", "path": "/listing/sync", "status": 429,
        "headers": {"Retry-After": "2"}, "count": 2})
    headers = bearer(client)
    body = {"group_external_ref": "g"}
    for _ in range(2):
        r = client.post(SYNC, json=body, headers=headers)
        assert r.status_code == 429 and r.headers["Retry-After"] == "2"
        assert r.json()["error"]["type"] == "rate_limited"
    assert client.post(SYNC, json=body, headers=headers).status_code == 200
    client.post("/_sandbox/faults", json={"portal": "rentix", "path": "/listings",
                                          "status": 502, "body": "<html>bad gateway</html>"})
    r = client.get(f"{RENTIX}/listings", headers=KEY)
    assert r.status_code == 502 and r.text == "<html>bad gateway</html>"
    assert r.headers["X-RateLimit-Limit"] == "300"
    assert client.get(f"{RENTIX}/agency", headers=KEY).status_code == 200  # other path
    client.post("/_sandbox/faults", json={"portal": "rentix", "status": 500,
                                          "body": {"custom": True}})
    assert client.get(f"{RENTIX}/listings", headers=KEY).status_code == 502  # oldest first
    r = client.get(f"{RENTIX}/agency", headers=KEY)
    assert r.status_code == 500 and r.json() == {"custom": True}
    client.delete("/_sandbox/faults")
    assert client.get(f"{RENTIX}/listings", headers=KEY).status_code == 200


def test_fault_does_not_touch_state(client: httpx.Client) -> None:
    client.post("/_sandbox/faults", json={"portal": "rentix", "method": "PUT", "status": 500})
    assert client.put(f"{RENTIX}/listings", json={"externalId": "a"},
                      headers=KEY).status_code == 500
    assert client.get("/_sandbox/rentix/listings").json()["items"] == []


def test_latency_only_fault_then_serves_normally(client: httpx.Client) -> None:
    client.post("/_sandbox/faults", json={"portal": "rentix", "path": "/agency",
                                          "latency_ms": 300})
    started = time.monotonic()
    r = client.get(f"{RENTIX}/agency", headers=KEY)
    assert r.status_code == 200 and time.monotonic() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        client.get(f"{RENTIX}/agency", headers=KEY, timeout=0.1)


def test_outage_for_a_duration(client: httpx.Client) -> None:
    client.post("/_sandbox/faults", json={"portal": "travtus", "status": 503,
                                          "duration_s": 0.5})
    form = {"grant_type": "client_credentials", "client_id": "sandbox",
            "client_secret": "sandbox"}
    assert client.post("/travtus/oauth2/token", data=form).status_code == 503
    wait_until(lambda: client.post("/travtus/oauth2/token", data=form).status_code == 200,
               timeout=5, what="the outage to end")


@pytest.mark.parametrize("spec", [{"portal": "zillow", "status": 500}, {"portal": "rentix"},
                                  {"portal": "rentix", "status": "500"},
                                  {"portal": "rentix", "status": 99}])
def test_bad_fault_specs(client: httpx.Client, spec: dict[str, Any]) -> None:
    r = client.post("/_sandbox/faults", json=spec)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request"
