"""A listing's version is an integer from 0 to 2^53 - 1 (contract section 2), through the real
webhook: anything else is a 400 naming the field and the range; every version in range is
stored and ordered exactly (the fold compares versions as Lua's doubles)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis

from bridge.app import create_app
from bridge.constants import ks
from bridge.settings import Settings
from tests.conftest import SECRET
from tests.support import crm
from tests.support.ingest import fold
from tests.support.servers import serve_app


@pytest.fixture
def bridge(settings: Settings) -> Iterator[httpx.Client]:
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, timeout=10) as c:
        yield c


def post(bridge: httpx.Client, body: bytes | dict[str, Any], msg_id: str | None = None
         ) -> httpx.Response:
    return crm.post(bridge, SECRET, body, msg_id=msg_id)


MAX_VERSION = 2**53 - 1  # contract section 2

# Big integers as JSON numbers: orjson writes none beyond 64 bits, so a marker is swapped in.
MARK = 123_456_789


def with_version(payload: dict[str, Any], version: bytes) -> bytes:
    body = orjson.dumps(payload)
    assert body.count(b"%d" % MARK) == 1
    return body.replace(b"%d" % MARK, version)


@pytest.mark.parametrize("version", [
    b"9223372036854775808",  # 2^63: stored as 1e+20-like doubles, it wedged its group
    b"18446744073709551616",  # 2^64
    b"100000000000000000000000000000",
    b"9007199254740992",  # 2^53: the first integer a double cannot tell from its neighbour
    b"-1", b"1.5", b"7.0", b"1e20", b'"7"', b"true",
])
@pytest.mark.parametrize(("shape", "field"), [
    ("upsert", "listing.version"),
    ("delete", "listing.version"),
    ("snapshot", "listings[1].version"),
])
def test_a_version_out_of_range_or_not_an_integer_is_400_naming_the_field_and_the_range(
    bridge: httpx.Client, r: redis.Redis, settings: Settings, version: bytes, shape: str,
    field: str
) -> None:
    payload = {
        "upsert": crm.upsert("g1", "apt-1", MARK),
        "delete": crm.event("listing.deleted", "g1",
                            listing={"external_ref": "apt-1", "version": MARK}),
        "snapshot": crm.event("group.snapshot", "g1",
                              listings=[crm.listing("apt-0", 1), crm.listing("apt-1", MARK)]),
    }[shape]

    response = post(bridge, with_version(payload, version))

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["field"]) == ("invalid_event", field)
    assert error["message"].startswith(f"{field}: ")
    assert f"from 0 to {MAX_VERSION}" in error["message"]
    assert "2^53 - 1" in error["message"]
    assert not r.exists(ks().INBOX) and not r.keys(ks().LISTING + "*")


@pytest.mark.parametrize("shape", ["upsert", "snapshot"])
def test_the_largest_version_is_accepted_and_stored_exactly(
    bridge: httpx.Client, r: redis.Redis, settings: Settings, shape: str
) -> None:
    payload = (crm.upsert("g1", "apt-1", MAX_VERSION) if shape == "upsert" else
               crm.event("group.snapshot", "g1", listings=[crm.listing("apt-1", MAX_VERSION)]))
    assert post(bridge, payload).status_code == 202
    assert fold(r, settings) == 1
    assert r.hget(ks().LISTING + "apt-1", "v") == str(MAX_VERSION)


def test_versions_next_to_2_to_the_53_order_exactly_either_way_round(
    bridge: httpx.Client, r: redis.Redis, settings: Settings
) -> None:
    top, below = MAX_VERSION, MAX_VERSION - 1

    # The newer first: the older one, arriving later, changes nothing.
    assert post(bridge, crm.upsert("g1", "a", top, rooms=1)).status_code == 202
    assert post(bridge, crm.upsert("g1", "a", below, rooms=2)).status_code == 202
    # The older first: the newer one replaces it.
    assert post(bridge, crm.upsert("g1", "b", below, rooms=2)).status_code == 202
    assert post(bridge, crm.upsert("g1", "b", top, rooms=1)).status_code == 202
    # The same version again, from another event: applies (the later arrival, equal times).
    assert post(bridge, crm.upsert("g1", "c", top, rooms=1)).status_code == 202
    assert post(bridge, crm.upsert("g1", "c", top, rooms=3)).status_code == 202

    assert fold(r, settings) == 5
    for ref, rooms in (("a", 1), ("b", 1), ("c", 3)):
        assert r.hget(ks().LISTING + ref, "v") == str(top), ref
        assert orjson.loads(r.get(ks().BODY + ref))["rooms"] == rooms, ref
    # And a deletion at the version below is older: refused.
    deletion = crm.event("listing.deleted", "g1", listing={"external_ref": "a", "version": below})
    assert post(bridge, deletion).status_code == 202
    assert fold(r, settings) == 0
    assert r.hget(ks().LISTING + "a", "d") == "0"
