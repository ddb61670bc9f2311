"""The /_sandbox/ admin API: journal, seeding, switches, credentials, reset."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import orjson

from tests.support.servers import wait_until

from .conftest import KEY, RENTIX, bearer, publishable, sync_listing, token


def test_journal_records_both_portals(client: httpx.Client) -> None:
    client.put(f"{RENTIX}/listings", json={"externalId": "a"},
               headers={**KEY, "Idempotency-Key": "j-1"})
    client.get(f"{RENTIX}/listings?limit=5", headers=KEY)
    client.put(f"{RENTIX}/listings", content=b"not json",
               headers={**KEY, "Content-Type": "application/json"})
    headers = bearer(client)
    client.post("/travtus/listing/sync", json={"group_external_ref": "g"}, headers=headers)
    entries = client.get("/_sandbox/journal").json()["requests"]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    first = entries[0]
    assert first["portal"] == "rentix" and first["method"] == "PUT"
    assert first["path"] == "/listings" and first["status"] == 200
    assert first["idempotency_key"] == "j-1" and first["replayed"] is False
    assert first["body"] == {"externalId": "a"} and first["at"].endswith("Z")
    assert entries[1]["query"] == "limit=5" and entries[1]["body"] is None
    assert entries[2]["status"] == 400 and entries[2]["body"] == "not json"
    assert entries[3]["path"] == "/oauth2/token"
    assert entries[3]["body"]["grant_type"] == "client_credentials"
    assert entries[4]["path"] == "/listing/sync" and entries[4]["status"] == 200
    travtus = client.get("/_sandbox/journal?portal=travtus").json()["requests"]
    assert [e["seq"] for e in travtus] == [4, 5]
    assert [e["seq"] for e in client.get("/_sandbox/journal?since=3").json()["requests"]] == [4, 5]
    assert client.get("/_sandbox/journal?since=x").status_code == 400


def test_a_write_cut_off_mid_body_is_journalled_as_such_and_applies_nothing(
    client: httpx.Client, base_url: str
) -> None:
    """A client killed while it sends its body (a worker SIGKILLed mid-PUT) leaves a journal
    entry that says so: `cut_off`, status 499, no body; the portal holds nothing of it."""
    body = orjson.dumps(publishable("cut-1"))
    url = urlsplit(base_url)
    head = (f"PUT {RENTIX}/listings HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: ApiKey sandbox\r\nIdempotency-Key: cut-key\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head.encode() + body[: len(body) // 2])
    entries = wait_until(lambda: client.get("/_sandbox/journal").json()["requests"],
                         what="the cut-off PUT in the journal")
    assert isinstance(entries, list)
    assert [(e["method"], e["status"], e["cut_off"], e["body"], e["idempotency_key"])
            for e in entries] == [("PUT", 499, True, None, "cut-key")]
    assert client.get("/_sandbox/rentix/listings").json()["items"] == []
    # The same key sent whole afterwards is applied, not taken for a replay or a request in flight.
    again = client.put(f"{RENTIX}/listings", content=body,
                       headers={**KEY, "Idempotency-Key": "cut-key",
                                "Content-Type": "application/json"})
    assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers
    whole = client.get("/_sandbox/journal?since=1").json()["requests"]
    assert [(e["status"], e["cut_off"]) for e in whole] == [(200, False)]


def test_rentix_seed_and_inspect(client: httpx.Client) -> None:
    ids = client.post("/_sandbox/rentix/listings", json={"listings": [
        {"externalId": "s1", "announcementValue": 5},
        {"announcementStatus": "expired"}]}).json()["ids"]
    items = client.get("/_sandbox/rentix/listings").json()["items"]
    assert [x["id"] for x in items] == ids
    assert [x["formData"]["announcementStatus"] for x in items] == ["active", "expired"]
    assert [x["externalId"] for x in items] == ["s1", None]
    assert items[0]["lastSyncedAt"] is None
    r = client.post("/_sandbox/rentix/listings", json={"listings": [{"externalId": "s1"}]})
    assert r.status_code == 409


def test_travtus_seed_inspect_and_groups(client: httpx.Client) -> None:
    seeded = client.post("/_sandbox/travtus/listings", json={
        "group": "g", "listings": [sync_listing("a"), sync_listing("b")]}).json()
    assert seeded["identifiers"] == ["1001", "1002"]
    client.post("/_sandbox/travtus/listings", json={"group": "h", "listings": [sync_listing("c")]})
    listings = client.get("/_sandbox/travtus/listings?group=g").json()["listings"]
    assert [(x["identifier"], x["external_reference"], x["group_external_ref"])
            for x in listings] == [("1001", "a", "g"), ("1002", "b", "g")]
    assert len(client.get("/_sandbox/travtus/listings").json()["listings"]) == 3
    groups = client.get("/_sandbox/travtus/groups").json()["groups"]
    assert [(g["group_external_ref"], g["listings"]) for g in groups] == [("g", 2), ("h", 1)]
    client.post("/_sandbox/travtus/groups/g/deny")
    headers = bearer(client)
    r = client.post("/travtus/listing/sync/", json={"group_id": seeded["group_id"]},
                    headers=headers)
    assert r.status_code == 401 and r.json()["error"]["type"] == "no_access_to_group"
    client.post("/_sandbox/travtus/groups/g/allow")
    r = client.post("/travtus/listing/sync/", json={"group_id": seeded["group_id"]},
                    headers=headers)
    assert r.status_code == 200


def test_credentials_change(client: httpx.Client) -> None:
    old_token = {"Authorization": f"Bearer {token(client)}"}
    r = client.post("/_sandbox/credentials", json={
        "rentix_api_key": "new-key", "travtus_client_id": "cid", "travtus_client_secret": "sec"})
    assert r.status_code == 200
    assert client.get(f"{RENTIX}/agency", headers=KEY).status_code == 401
    assert client.get(f"{RENTIX}/agency", headers={"X-API-Key": "new-key"}).status_code == 200
    r = client.post("/travtus/listing/sync/", json={"group_external_ref": "g"}, headers=old_token)
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_authorization"
    r = client.post("/travtus/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": "sandbox", "client_secret": "sandbox"})
    assert r.status_code == 401
    new = {"Authorization": f"Bearer {token(client, 'cid', 'sec')}"}
    r = client.post("/travtus/listing/sync/", json={"group_external_ref": "g"}, headers=new)
    assert r.status_code == 200


def test_rate_limit_settings(client: httpx.Client) -> None:
    r = client.post("/_sandbox/rate-limits", json={"rentix_per_minute": 10})
    assert r.json() == {"rentix_per_minute": 10, "rentix_bulk_per_minute": 30}
    assert client.post("/_sandbox/rate-limits", json={"rentix_per_minute": "x"}).status_code == 400


def test_reset_forgets_everything(client: httpx.Client) -> None:
    client.put(f"{RENTIX}/listings", json={"externalId": "a"}, headers=KEY)
    client.post("/_sandbox/travtus/listings", json={"group": "g", "listings": [sync_listing("a")]})
    old_token = {"Authorization": f"Bearer {token(client)}"}
    client.post("/_sandbox/faults", json={"portal": "travtus", "path": "/listings/find",
                                          "status": 500})
    client.post("/_sandbox/rate-limits", json={"rentix_per_minute": 2})
    client.get(f"{RENTIX}/agency", headers=KEY)
    client.post("/_sandbox/rentix/agency", json={"suspended": True})
    client.post("/_sandbox/travtus/groups/g/deny")
    client.post("/_sandbox/credentials", json={"rentix_api_key": "changed"})

    assert client.post("/_sandbox/reset").json() == {"reset": True}

    assert client.get("/_sandbox/rentix/listings").json()["items"] == []
    assert client.get("/_sandbox/travtus/listings").json()["listings"] == []
    assert client.get("/_sandbox/journal").json()["requests"] == []
    assert client.get("/_sandbox/faults").json()["faults"] == []
    r = client.get(f"{RENTIX}/agency", headers=KEY)  # key, switch, limit and counter restored
    assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == "299"
    r = client.post("/travtus/listing/sync/", json={"group_external_ref": "g"}, headers=old_token)
    assert r.json()["error"]["type"] == "invalid_authorization"
    r = client.post("/travtus/listings/find/", json={"group_external_ref": "g"},
                    headers=bearer(client))
    assert r.status_code == 404  # not denied, no fault, no listings
    assert client.put(f"{RENTIX}/listings", json={"externalId": "a"},
                      headers=KEY).json()["id"] == 1
