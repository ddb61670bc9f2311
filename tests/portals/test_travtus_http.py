"""TravtusAdapter against the sandbox over real HTTP: sync, find, single create, delete, tokens."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.portals import Outcome, TravtusAdapter
from tests.support.canonical import FULL, listing
from tests.support.sandbox import Sandbox


def group_of(travtus: TravtusAdapter, *refs: str) -> list[dict[str, Any]]:
    return travtus.map_group([listing(external_ref=r) for r in refs])


async def token_requests(sandbox: Sandbox) -> int:
    return sum(r["path"].endswith("/oauth2/token") for r in await sandbox.journal("travtus"))


async def test_sync_creates_updates_and_deletes(travtus: TravtusAdapter,
                                                sandbox: Sandbox) -> None:
    first = await travtus.sync("north", group_of(travtus, "a", "b", "c"), "sync-1")
    assert first.outcome is Outcome.OK and first.body == {"success": True}, first
    stored = await sandbox.travtus_listings("north")
    assert sorted(x["external_reference"] for x in stored) == ["a", "b", "c"]

    hidden = listing(external_ref="c", status="hidden")
    second = travtus.map_group([listing(external_ref="a", bedrooms=3), hidden])
    assert (await travtus.sync("north", second, "sync-2")).ok
    stored = await sandbox.travtus_listings("north")
    assert [(x["external_reference"], x["bedrooms"]) for x in stored] == [("a", 3)]

    found = await travtus.find_all("north")
    assert [x["external_ref"] for x in found] == ["a"]
    assert found[0]["unit_type"] == "studio_apartment"
    assert found[0]["sqft"] == 699.7

    keys = [r["idempotency_key"] for r in await sandbox.journal("travtus")
            if r["path"].endswith("/listing/sync/")]
    assert keys == ["sync-1", "sync-2"]


async def test_empty_sync_empties_the_group(travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    assert (await travtus.sync("north", group_of(travtus, "a", "b"))).ok
    assert (await travtus.sync("north", [])).ok
    assert await sandbox.travtus_listings("north") == []
    assert await travtus.find_all("north") == []  # 404 not_found means an empty group


async def test_find_all_walks_every_page(travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    seeded = await sandbox.seed_travtus("big", group_of(travtus, *(f"r{i}" for i in range(230))))
    first = await travtus.find_page("big")
    assert first.ok and len(first.body["listings"]) == 100 and first.body["last_id"] != -1
    found = await travtus.find_all("big")
    assert [x["identifier"] for x in found] == sorted(seeded, key=int)
    assert len({x["external_ref"] for x in found}) == 230


async def test_find_page_filters_by_external_ref(travtus: TravtusAdapter) -> None:
    assert (await travtus.sync("north", group_of(travtus, "a", "b"))).ok
    page = await travtus.find_page("north", external_ref="b")
    assert page.ok and [x["external_ref"] for x in page.body["listings"]] == ["b"]
    assert page.body["last_id"] == -1


async def test_replayed_sync_has_no_second_effect(travtus: TravtusAdapter,
                                                  sandbox: Sandbox) -> None:
    listings = group_of(travtus, "a")
    assert (await travtus.sync("north", listings, "same")).ok
    assert (await travtus.sync("north", listings, "same")).ok
    syncs = [r for r in await sandbox.journal("travtus") if r["path"].endswith("/listing/sync/")]
    assert [r["replayed"] for r in syncs] == [False, True]


async def test_create_listing_creates_then_updates_by_unit_id(
        travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    group_id = await sandbox.travtus_group_id("north")
    body = {k: v for k, v in travtus.map_listing(FULL).items()
            if k not in ("external_reference", "number_of_bathrooms")}  # not single-create fields
    body["unit_id"] = "u-7"
    created = await travtus.create_listing(group_id, body, "create-1")
    assert created.ok and created.body["success"] is True, created
    updated = await travtus.create_listing(group_id, {**body, "bedrooms": 4}, "create-2")
    assert updated.ok
    assert updated.body["listing"]["identifier"] == created.body["listing"]["identifier"]
    [stored] = await sandbox.travtus_listings("north")
    assert stored["bedrooms"] == 4


async def test_delete_listing_now(travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    [identifier] = await sandbox.seed_travtus("north", group_of(travtus, "a"))
    result = await travtus.delete_listing(identifier, idempotency_key="del-1")
    assert result.ok and result.body["success"] is True
    assert str(result.body["listing_id"]) == str(identifier)
    assert await sandbox.travtus_listings("north") == []


async def test_delete_listing_scheduled(travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    [identifier] = await sandbox.seed_travtus("north", group_of(travtus, "a"))
    assert (await travtus.delete_listing(identifier, inactive_date="2099-01-01")).ok
    assert len(await sandbox.travtus_listings("north")) == 1  # scheduled, not gone yet


async def test_one_token_for_many_concurrent_calls(travtus: TravtusAdapter,
                                                   sandbox: Sandbox) -> None:
    await sandbox.seed_travtus("north", group_of(travtus, "a"))
    assert travtus.tokens.fetches == 0
    results = await asyncio.gather(*(travtus.find_page("north") for _ in range(20)))
    assert all(r.ok for r in results), results
    assert travtus.tokens.fetches == 1
    assert await token_requests(sandbox) == 1


async def test_expired_token_is_refreshed_once_and_the_call_retried(
        travtus: TravtusAdapter, sandbox: Sandbox) -> None:
    assert (await travtus.sync("north", group_of(travtus, "a"))).ok
    await sandbox.expire_tokens()
    results = await asyncio.gather(*(travtus.find_page("north") for _ in range(10)))
    assert all(r.ok for r in results), results
    assert travtus.tokens.fetches == 2
    assert await token_requests(sandbox) == 2
    expired = [r for r in await sandbox.journal("travtus") if r["status"] == 401]
    assert 1 <= len(expired) <= 10


async def test_sync_maps_a_full_listing_the_sandbox_accepts(travtus: TravtusAdapter,
                                                            sandbox: Sandbox) -> None:
    assert (await travtus.sync("north", [travtus.map_listing(FULL)])).ok
    [stored] = await sandbox.travtus_listings("north")
    assert stored["lease_terms"][0]["rent"] == 550
    assert stored["address"]["postal_code"] == "MD-2012"
