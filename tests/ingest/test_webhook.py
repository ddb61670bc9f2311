"""The webhook, row by row of contract section 1, against real uvicorn and a real Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
import tracemalloc
from collections.abc import Iterator

import httpx
import orjson
import pytest
import redis
import standardwebhooks

from bridge import constants as k
from bridge.app import create_app
from bridge.constants import ks
from bridge.packing import unpack
from bridge.settings import Settings
from tests.conftest import OTHER_SECRET, SECRET, make_settings
from tests.support import crm
from tests.support.ingest import fold
from tests.support.servers import redis_server, serve_app


@pytest.fixture
def bridge(settings: Settings) -> Iterator[httpx.Client]:
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, timeout=10) as c:
        yield c


def stored_listing(r: redis.Redis, ref: str) -> dict[str, str]:
    """The listing hash, and its body (a key of its own) under "body"."""
    held: dict[str, str] = r.hgetall(f"{ks().LISTING}{ref}")
    body = r.get(f"{ks().BODY}{ref}")
    return held if body is None else {**held, "body": body}


def stored_nothing(r: redis.Redis) -> bool:
    """Nothing but the counters (rejections are counted for the dashboard and /metrics), and
    the record of the start-up's migration."""
    return all(key.startswith(ks().STATS) or key in (ks().METRICS, k.MIGRATION)
               for key in r.keys("*"))


def stats(r: redis.Redis) -> dict[str, int]:
    """Counters summed over minutes (a test may straddle a minute boundary)."""
    totals: dict[str, int] = {}
    for key in r.keys("lb:{t:default}:stats:*"):
        assert 0 < r.ttl(key) <= 7200  # counters expire on their own
        for field, value in r.hgetall(key).items():
            totals[field] = totals.get(field, 0) + int(value)
    return totals


def rejections(r: redis.Redis) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in r.keys("lb:{t:default}:stats:*"):
        for field, value in r.hgetall(key).items():
            if field.startswith("rejected:"):
                reason = field.removeprefix("rejected:")
                counts[reason] = counts.get(reason, 0) + int(value)
    return counts


def test_accepted_event_is_stored_before_202(bridge: httpx.Client, r: redis.Redis,
                                             settings: Settings) -> None:
    response = crm.post(bridge, SECRET, crm.upsert("north", "apt-1", 3), msg_id="msg_1")
    assert response.status_code == 202
    assert response.json() == {"accepted": True, "id": "msg_1"}
    # Stored in the inbox before the answer; a worker's fold makes it the listing's state.
    assert r.llen(ks().INBOX) == 1 and not r.exists(ks().LISTING + "apt-1")
    assert fold(r, settings) == 1
    held = stored_listing(r, "apt-1")
    assert held["g"] == "north" and held["v"] == "3" and held["d"] == "0"
    assert orjson.loads(unpack(held["body"]))["external_ref"] == "apt-1"
    assert r.sismember(ks().MEMBERS + "north", "apt-1")
    assert r.zscore(ks().DUE, "north") is not None


def test_duplicate_webhook_id_is_answered_200_and_not_processed_twice(
    bridge: httpx.Client, r: redis.Redis, settings: Settings
) -> None:
    payload = crm.upsert("north", "apt-1", 1)
    assert crm.post(bridge, SECRET, payload, msg_id="msg_dup").status_code == 202
    fold(r, settings)
    seq = r.hget(ks().PENDING + "north", "seq")
    assert seq == "1"
    again = crm.post(bridge, SECRET, payload, msg_id="msg_dup")
    assert again.status_code == 200
    assert again.json() == {"duplicate": True, "id": "msg_dup"}
    assert fold(r, settings) == 0
    assert r.hget(ks().PENDING + "north", "seq") == seq
    assert stats(r) == {"received": 1, "duplicate": 1}


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: h.pop("webhook-signature"), "missing header"),
        (lambda h: h.update({"webhook-signature": "v1,AAAA"}), "no signature matches"),
        (lambda h: h.update({"webhook-id": "msg_other"}), "no signature matches"),
        (lambda h: h.update({"webhook-timestamp": "yesterday"}), "Unix seconds"),
    ],
)
def test_bad_signature_is_401_and_stores_nothing(
    bridge: httpx.Client, r: redis.Redis, mutate: object, reason: str
) -> None:
    body = orjson.dumps(crm.upsert("north", "apt-1"))
    headers = crm.signed_headers(SECRET, body)
    mutate(headers)  # type: ignore[operator]
    response = bridge.post("/webhooks/crm", content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_signature"
    assert reason in response.json()["error"]["message"]
    assert stored_nothing(r)
    assert rejections(r) == {"invalid_signature": 1}


# 302, not 301: the header holds whole seconds, so a timestamp 301 s ahead of a truncated clock
# can be less than 300 s ahead of the server's clock by the time the request arrives.
@pytest.mark.parametrize("skew", [-302, 302])
def test_timestamp_outside_tolerance_is_401(bridge: httpx.Client, r: redis.Redis,
                                            skew: int) -> None:
    response = crm.post(bridge, SECRET, crm.upsert("north", "apt-1"),
                        timestamp=int(time.time()) + skew)
    assert response.status_code == 401
    assert "300s" in response.json()["error"]["message"]
    assert stored_nothing(r)


def test_timestamp_tolerance_is_configurable(redis_url: str) -> None:
    settings = make_settings(redis_url, webhook={"tolerance_seconds": 1000})
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        old = int(time.time()) - 900
        assert crm.post(client, SECRET, crm.upsert("g", "a"), timestamp=old).status_code == 202


def test_body_not_json_is_400(bridge: httpx.Client, r: redis.Redis) -> None:
    response = crm.post(bridge, SECRET, b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_json"
    assert stored_nothing(r)
    assert rejections(r) == {"invalid_json": 1}  # counted as what it is, not invalid_event


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"type": "listing.moved", "occurred_at": crm.at(-900), "group": "g"}, "type"),
        (crm.event("listing.updated", "g"), "listing"),
        (crm.event("listing.updated", "", listing=crm.listing("a")), "group"),
        (crm.upsert("g", "a", price={"amount": -1, "currency": "EUR"}), "listing.price.amount"),
        (crm.upsert("g", "a", status="archived"), "listing.status"),
        (crm.upsert("g", "a", external_ref=""), "listing.external_ref"),
        (crm.event("listing.updated", "g", occurred_at=crm.at(-900)[:-1],
                   listing=crm.listing("a")), "occurred_at"),
        (crm.event("listing.deleted", "g", listing={}), "listing.external_ref"),
        (crm.event("group.snapshot", "g", listings=[crm.listing("a"), crm.listing("a")]),
         "listings"),
        (crm.event("group.snapshot", "g", listings=[{"external_ref": "a", "bedrooms": "x"}]),
         "listings[0].bedrooms"),
    ],
)
def test_invalid_event_is_400_naming_the_field(
    bridge: httpx.Client, r: redis.Redis, payload: dict[str, object], field: str
) -> None:
    response = crm.post(bridge, SECRET, payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_event"
    assert error["field"] == field
    assert error["message"].startswith(field)
    assert stored_nothing(r)
    assert rejections(r) == {"invalid_event": 1}


def test_body_over_the_limit_is_413(bridge: httpx.Client, r: redis.Redis) -> None:
    big = orjson.dumps(crm.upsert("g", "a", description="x" * (1_048_576 + 10)))
    response = crm.post(bridge, SECRET, big)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "body_too_large"
    assert stored_nothing(r)


def test_50_mb_streamed_body_is_refused_without_being_read(bridge: httpx.Client) -> None:
    def fifty_megabytes() -> Iterator[bytes]:
        chunk = b"x" * 65536
        for _ in range(800):
            yield chunk

    headers = {"content-type": "application/json", "webhook-id": "m", "webhook-timestamp": "1",
               "webhook-signature": "v1,AAAA"}
    # uvicorn serves in this process: tracemalloc sees every byte the server holds.
    tracemalloc.start()
    try:
        response = bridge.post("/webhooks/crm", content=fifty_megabytes(), headers=headers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 413
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes: the body was buffered"


def test_declared_50_mb_is_refused_before_reading(bridge: httpx.Client) -> None:
    # Raw HTTP: declare 50 MB, send one byte; the answer must come without the rest.
    host, port = bridge.base_url.host, bridge.base_url.port
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"POST /webhooks/crm HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 52428800\r\n\r\n{")
        assert s.recv(200).startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_content_type_not_json_is_415(bridge: httpx.Client, r: redis.Redis,
                                      content_type: str | None) -> None:
    body = orjson.dumps(crm.upsert("g", "a"))
    headers = crm.signed_headers(SECRET, body)
    headers.pop("content-type")
    if content_type:
        headers["content-type"] = content_type
    response = bridge.post("/webhooks/crm", content=body, headers=headers)
    assert response.status_code == 415
    assert stored_nothing(r)


@pytest.mark.servers
def test_redis_unreachable_is_503_with_retry_after_and_never_2xx() -> None:
    with redis_server() as own:
        settings = make_settings(own.url)
        with serve_app(create_app(settings)) as url, httpx.Client(base_url=url) as client:
            assert crm.post(client, SECRET, crm.upsert("g", "a", 1)).status_code == 202
            own.stop(kill=True)
            for version in range(2, 6):
                response = crm.post(client, SECRET, crm.upsert("g", "a", version))
                assert response.status_code == 503
                assert response.headers["retry-after"] == "5"
                assert response.json()["error"]["type"] == "storage_unavailable"
            assert client.get("/readyz").status_code == 503
            assert client.get("/healthz").status_code == 200
            own.start()
            # AOF kept what was acknowledged; nothing answered 503 was stored.
            check = redis.Redis.from_url(own.url, decode_responses=True)
            assert fold(check, settings) == 1
            assert check.hget(ks().LISTING + "a", "v") == "1"
            assert crm.post(client, SECRET, crm.upsert("g", "a", 7)).status_code == 202
            assert fold(check, settings) == 1
            assert check.hget(ks().LISTING + "a", "v") == "7"
            assert client.get("/readyz").status_code == 200
            check.close()


def test_secret_rotation_accepts_either_secret(redis_url: str, r: redis.Redis) -> None:
    settings = make_settings(redis_url, webhook={"secrets": [SECRET, OTHER_SECRET]})
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        assert crm.post(client, SECRET, crm.upsert("g", "a")).status_code == 202
        assert crm.post(client, OTHER_SECRET, crm.upsert("g", "b")).status_code == 202
        # The sender may list several signatures: one valid is enough.
        body = orjson.dumps(crm.upsert("g", "c"))
        headers = crm.signed_headers(OTHER_SECRET, body)
        headers["webhook-signature"] = "v1,Ym9ndXM= " + headers["webhook-signature"]
        assert client.post("/webhooks/crm", content=body, headers=headers).status_code == 202
    # A request signed by a secret not configured is refused.
    with serve_app(create_app(make_settings(redis_url))) as url, \
            httpx.Client(base_url=url) as client:
        assert crm.post(client, OTHER_SECRET, crm.upsert("g", "d")).status_code == 401


def test_svix_headers_are_accepted(bridge: httpx.Client, r: redis.Redis) -> None:
    response = crm.post(bridge, SECRET, crm.upsert("g", "a"), msg_id="msg_svix", prefix="svix")
    assert response.status_code == 202
    assert response.json()["id"] == "msg_svix"


def test_request_signed_by_the_standardwebhooks_package(bridge: httpx.Client,
                                                        r: redis.Redis,
                                                        settings: Settings) -> None:
    body = orjson.dumps(crm.upsert("g", "a")).decode()
    now = dt.datetime.now(tz=dt.UTC)
    signature = standardwebhooks.Webhook(SECRET).sign("msg_ref", now, body)
    headers = {"content-type": "application/json", "webhook-id": "msg_ref",
               "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature}
    response = bridge.post("/webhooks/crm", content=body, headers=headers)
    assert response.status_code == 202
    fold(r, settings)
    assert r.exists(ks().LISTING + "a")


def test_100_concurrent_posts_of_one_webhook_id_are_stored_once(
    settings: Settings, r: redis.Redis
) -> None:
    body = orjson.dumps(crm.upsert("g", "a", 1))
    headers = crm.signed_headers(SECRET, body, msg_id="msg_race")

    async def storm(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=20) as client:
            responses = await asyncio.gather(*[
                client.post("/webhooks/crm", content=body, headers=headers) for _ in range(100)
            ])
        return [resp.status_code for resp in responses]

    with serve_app(create_app(settings)) as url:
        statuses = asyncio.run(storm(url))
    assert statuses.count(202) == 1
    assert statuses.count(200) == 99
    assert r.llen(ks().INBOX) == 100  # one event and 99 marked redeliveries, for the stories
    assert fold(r, settings) == 1
    assert r.hget(ks().PENDING + "g", "seq") == "1"
    assert stats(r) == {"received": 1, "duplicate": 99}


def test_out_of_order_versions_keep_the_newest(bridge: httpx.Client, r: redis.Redis,
                                               settings: Settings) -> None:
    assert crm.post(bridge, SECRET, crm.upsert("g", "a", 5, bedrooms=5)).status_code == 202
    # An older version arrives late: accepted (it was delivered to us) but changes nothing.
    assert crm.post(bridge, SECRET, crm.upsert("g", "a", 4, bedrooms=4)).status_code == 202
    assert fold(r, settings) == 1  # the first only
    assert orjson.loads(unpack(stored_listing(r, "a")["body"]))["bedrooms"] == 5
    assert crm.post(bridge, SECRET, crm.upsert("g", "a", 6, bedrooms=6)).status_code == 202
    assert fold(r, settings) == 1
    assert orjson.loads(unpack(stored_listing(r, "a")["body"]))["bedrooms"] == 6


def test_without_versions_occurred_at_orders(bridge: httpx.Client, r: redis.Redis,
                                             settings: Settings) -> None:
    late = crm.event("listing.updated", "g", occurred_at=crm.at(-895),
                     listing=crm.listing("a", bedrooms=2))
    early = crm.event("listing.updated", "g", occurred_at=crm.at(-899),
                      listing=crm.listing("a", bedrooms=1))
    assert crm.post(bridge, SECRET, late).status_code == 202
    assert crm.post(bridge, SECRET, early).status_code == 202
    assert fold(r, settings) == 1
    assert orjson.loads(unpack(stored_listing(r, "a")["body"]))["bedrooms"] == 2
    assert r.hget(ks().STATS + str(int(time.time() * 1000) // 60000), "stale") == "1"


def test_deletion_and_older_recreate(bridge: httpx.Client, r: redis.Redis,
                                     settings: Settings) -> None:
    assert crm.post(bridge, SECRET, crm.upsert("g", "a", 1)).status_code == 202
    deleted = crm.event("listing.deleted", "g", listing={"external_ref": "a", "version": 2})
    assert crm.post(bridge, SECRET, deleted).status_code == 202
    assert fold(r, settings) == 2
    assert stored_listing(r, "a")["d"] == "1"
    assert crm.post(bridge, SECRET, crm.upsert("g", "a", 1)).status_code == 202
    assert fold(r, settings) == 0
    assert stored_listing(r, "a")["d"] == "1"
    assert crm.post(bridge, SECRET, crm.upsert("g", "a", 3)).status_code == 202
    assert fold(r, settings) == 1
    assert stored_listing(r, "a")["d"] == "0"


def test_a_listing_that_changes_group_moves(bridge: httpx.Client, r: redis.Redis,
                                            settings: Settings) -> None:
    assert crm.post(bridge, SECRET, crm.upsert("north", "a", 1)).status_code == 202
    fold(r, settings)
    r.delete(ks().DUE)
    assert crm.post(bridge, SECRET, crm.upsert("south", "a", 2)).status_code == 202
    fold(r, settings)
    assert not r.sismember(ks().MEMBERS + "north", "a")
    assert r.sismember(ks().MEMBERS + "south", "a")
    assert set(r.zrange(ks().DUE, 0, -1)) == {"north", "south"}


def test_snapshot_deletes_listings_it_leaves_out(bridge: httpx.Client, r: redis.Redis,
                                                 settings: Settings) -> None:
    for ref in ("a", "b", "c"):
        assert crm.post(bridge, SECRET, crm.upsert("g", ref, 1)).status_code == 202
    snapshot = crm.event("group.snapshot", "g", occurred_at=crm.at(2700),
                         listings=[crm.listing("a", 2), crm.listing("d", 1)])
    assert crm.post(bridge, SECRET, snapshot).status_code == 202
    fold(r, settings)
    state = {ref: stored_listing(r, ref)["d"] for ref in ("a", "b", "c", "d")}
    assert state == {"a": "0", "b": "1", "c": "1", "d": "0"}


def test_debounce_due_time_is_trailing_and_capped(redis_url: str, r: redis.Redis) -> None:
    settings = make_settings(redis_url, debounce={"window_ms": 400, "max_wait_ms": 1000})
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        crm.post(client, SECRET, crm.upsert("g", "a", 1))
        fold(r, settings)
        first = int(r.hget(ks().PENDING + "g", "first"))
        assert r.zscore(ks().DUE, "g") == first + 400
        for version in range(2, 40):
            crm.post(client, SECRET, crm.upsert("g", "a", version))
            fold(r, settings)  # with the time it was received, however late
            last = int(r.hget(ks().PENDING + "g", "last"))
            assert r.zscore(ks().DUE, "g") == min(last + 400, first + 1000)


def test_only_a_post_to_the_webhook_path_skips_the_router(bridge: httpx.Client,
                                                          r: redis.Redis) -> None:
    # BridgeApp answers POST /webhooks/crm itself; every other request is Starlette's routing.
    assert bridge.get("/webhooks/crm").status_code == 405
    assert bridge.post("/webhooks/crm/").status_code in (307, 404)
    assert bridge.post("/webhooks/crmx").status_code == 404
    assert bridge.get("/healthz").json() == {"status": "ok"}
    assert stored_nothing(r)
    response = bridge.post("/webhooks/crm", content=b"{}", headers={
        "content-type": "application/json"})
    assert response.status_code == 401 and response.json()["error"]["type"] == \
        "invalid_signature"
