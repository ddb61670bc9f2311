"""RentixAdapter against the sandbox over real HTTP: the happy paths."""

from __future__ import annotations

import time
from typing import Any

from bridge.portals import Outcome, RentixAdapter
from tests.support.canonical import FULL, listing
from tests.support.sandbox import Sandbox, eventually


async def test_upsert_creates_publishes_and_updates(rentix: RentixAdapter,
                                                    sandbox: Sandbox) -> None:
    payload = rentix.map_listing(FULL)
    created = await rentix.upsert(payload, "key-create")
    assert created.outcome is Outcome.OK, created
    assert created.body["created"] is True
    assert created.body["status"] == "pending_active" and created.body["jobId"] is not None
    assert created.latency_ms > 0

    updated = await rentix.upsert({**payload, "announcementValue": 600}, "key-update")
    assert updated.ok and updated.body["updated"] is True
    assert updated.body["id"] == created.body["id"]

    [stored] = await sandbox.rentix_listings()
    assert stored["externalId"] == "apt-001"
    assert stored["formData"]["announcementValue"] == 600

    keys = [r["idempotency_key"] for r in await sandbox.journal("rentix")
            if r["method"] == "PUT"]
    assert keys == ["key-create", "key-update"]


async def test_publish_job_completes(rentix: RentixAdapter) -> None:
    assert (await rentix.upsert(rentix.map_listing(FULL))).body["status"] == "pending_active"

    async def published() -> bool:
        read = await rentix.get_by_external_id("apt-001")
        return read.body["formData"]["announcementStatus"] == "active"

    await eventually(published)


async def test_agency_and_publish_job(rentix: RentixAdapter) -> None:
    agency = await rentix.get_agency()
    assert agency.ok and agency.body["isCrmEnabled"] is True, agency
    created = await rentix.upsert(rentix.map_listing(FULL))

    async def job_done() -> bool:
        job = await rentix.job_status(created.body["jobId"])
        assert job.ok, job
        return job.body["status"] == "completed"

    await eventually(job_done)
    unknown = await rentix.job_status(999_999)
    assert unknown.outcome is Outcome.NOT_FOUND


async def test_rate_limit_headers_are_exposed(rentix: RentixAdapter) -> None:
    assert rentix.rate_limit.limit is None
    result = await rentix.list_page()
    assert result.ok
    assert rentix.rate_limit.limit == 300
    assert rentix.rate_limit.remaining is not None and rentix.rate_limit.remaining < 300
    assert rentix.rate_limit.reset is not None and rentix.rate_limit.reset > time.time() - 1
    before = rentix.rate_limit.remaining
    assert (await rentix.bulk([{"op": "validate", "externalId": "v"}])).ok
    assert rentix.bulk_rate_limit.limit == 30
    assert rentix.rate_limit.remaining == before  # bulk answers do not overwrite it


async def test_reads_by_id_and_external_id(rentix: RentixAdapter) -> None:
    created = await rentix.upsert(rentix.map_listing(FULL))
    by_id = await rentix.get_listing(created.body["id"])
    by_ext = await rentix.get_by_external_id("apt-001")
    assert by_id.ok and by_ext.ok
    assert by_id.body["id"] == by_ext.body["id"] == created.body["id"]
    assert by_ext.body["externalId"] == "apt-001"
    assert len(by_ext.body["files"]) == len(FULL["photos"])


async def test_hidden_deletion_payload_takes_the_listing_off_the_site(
        rentix: RentixAdapter) -> None:
    await rentix.upsert(rentix.map_listing(FULL))
    hidden = await rentix.upsert(rentix.deletion_payload("apt-001"), check=False)
    assert hidden.ok and hidden.body["status"] == "hidden"
    read = await rentix.get_by_external_id("apt-001")
    assert read.body["formData"]["announcementStatus"] == "hidden"


async def test_iter_listings_walks_every_page(rentix: RentixAdapter, sandbox: Sandbox) -> None:
    seeded = await sandbox.seed_rentix(
        [{"externalId": f"s-{i:03}", "announcementStatus": "hidden"} for i in range(230)])
    first = await rentix.list_page(limit=100)
    assert first.ok and len(first.body["items"]) == 100
    ids = [item["id"] async for item in rentix.iter_listings()]
    assert ids == sorted(seeded)


async def test_link_and_unlink(rentix: RentixAdapter, sandbox: Sandbox) -> None:
    [listing_id] = await sandbox.seed_rentix([{"announcementStatus": "hidden"}])
    linked = await rentix.link(listing_id, "crm-42", "link-key")
    assert linked.ok and linked.body == {"id": listing_id, "externalId": "crm-42", "linked": True}
    assert (await rentix.get_by_external_id("crm-42")).body["id"] == listing_id
    unlinked = await rentix.unlink(listing_id)
    assert unlinked.ok and unlinked.body["unlinked"] is True
    assert (await rentix.get_listing(listing_id)).body["externalId"] is None


async def test_bulk_reports_partial_failure_as_ok_with_item_results(
        rentix: RentixAdapter) -> None:
    ops: list[dict[str, Any]] = [
        {"op": "upsert", "externalId": "b-1", "announcementStatus": "hidden"},
        {"op": "upsert", "externalId": "b-2", "propertyType": "spaceship"},
    ]
    result = await rentix.bulk(ops, "bulk-key")
    assert result.ok, result
    assert result.body["summary"]["total"] == 2 and result.body["summary"]["succeeded"] == 1
    assert [item["success"] for item in result.body["results"]] == [True, False]


async def test_delete_by_external_id_and_by_id(rentix: RentixAdapter) -> None:
    first = await rentix.upsert(rentix.map_listing(FULL))
    second = await rentix.upsert(rentix.map_listing(listing(external_ref="apt-002")))
    assert (await rentix.delete("apt-001")).ok
    assert (await rentix.delete(second.body["id"])).ok
    assert (await rentix.get_listing(first.body["id"])).outcome is Outcome.NOT_FOUND
    assert (await rentix.get_by_external_id("apt-002")).outcome is Outcome.NOT_FOUND
    gone = await rentix.delete("apt-001")
    assert (gone.outcome, gone.error_type, gone.status) == (
        Outcome.NOT_FOUND, "listing_not_found", 422)


async def test_idempotent_replay_has_no_second_effect(rentix: RentixAdapter,
                                                      sandbox: Sandbox) -> None:
    payload = rentix.map_listing(FULL)
    first = await rentix.upsert(payload, "same-key")
    again = await rentix.upsert(payload, "same-key")
    assert first.ok and again.ok and again.body == first.body
    puts = [r for r in await sandbox.journal("rentix") if r["method"] == "PUT"]
    assert [r["replayed"] for r in puts] == [False, True]
