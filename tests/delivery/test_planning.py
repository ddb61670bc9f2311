"""The pure planner (bridge.delivery.planning) with the real adapters, built offline: what a
flush sends for a given desired state, accepted state and quarantine."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.delivery.desired import DesiredListing
from bridge.delivery.ledger import Accepted, Quarantined
from bridge.delivery.planning import (
    ListingWrite,
    SyncPlan,
    guard_reason,
    plan_listings,
    plan_sync,
)
from bridge.portals import RentixAdapter, TravtusAdapter
from bridge.portals.rentix_mapping import DeletionBehaviour
from bridge.settings import GuardSettings
from tests.support.canonical import PHOTOS, listing

OFFLINE = "http://127.0.0.1:9"  # never called: planning does no I/O
NOW = 1_800_000_000_000
GUARD = GuardSettings(max_delete_count=5, max_delete_fraction=0.2)


def rentix(deletion: DeletionBehaviour = "hidden") -> RentixAdapter:
    return RentixAdapter("rentix", f"{OFFLINE}/rentix/api/v1", "k", deletion_behaviour=deletion)


TRAVTUS = TravtusAdapter("travtus", f"{OFFLINE}/travtus", f"{OFFLINE}/t", "id", "secret")


def live(ref: str, **changes: Any) -> DesiredListing:
    return DesiredListing(ref=ref, group="g", version=1, occurred_ms=NOW, deleted=False,
                          body=listing(external_ref=ref, **changes), received_ms=NOW)


def priced(ref: str, amount: int) -> DesiredListing:
    return live(ref, price={"amount": amount, "currency": "EUR", "period": "monthly"})


def gone(ref: str) -> DesiredListing:
    return DesiredListing(ref=ref, group="g", version=2, occurred_ms=NOW, deleted=True,
                          body=None, received_ms=NOW)


def accepted_as(write: ListingWrite) -> dict[str, Accepted]:
    """What the ledger holds once the target accepted ``write``."""
    return {write.ref: Accepted(write.digest, write.payload, NOW)}


def quarantined_as(ref: str, digest: str) -> dict[str, Quarantined]:
    return {ref: Quarantined(digest, "g", "validation_failed", "refused", "files", NOW)}


def only_write(plan_writes: list[ListingWrite]) -> ListingWrite:
    [write] = plan_writes
    return write


# -- per-listing targets (Rentix) --

def test_content_the_target_already_accepted_plans_nothing() -> None:
    first = only_write(plan_listings("rentix", rentix(), [live("apt-1")], {}, {}).writes)
    again = plan_listings("rentix", rentix(), [live("apt-1")], accepted_as(first), {})
    assert again.writes == [] and again.invalid == []


def test_changed_content_plans_one_upsert_with_a_new_key() -> None:
    first = only_write(plan_listings("rentix", rentix(), [live("apt-1")], {}, {}).writes)
    changed = [priced("apt-1", 600)]
    second = only_write(plan_listings("rentix", rentix(), changed, accepted_as(first), {}).writes)
    assert second.operation == "upsert"
    assert second.digest != first.digest
    assert second.key != first.key


def test_a_retry_of_the_same_intent_plans_the_same_key() -> None:
    first = only_write(plan_listings("rentix", rentix(), [live("apt-1")], {}, {}).writes)
    changed = [priced("apt-1", 600)]
    attempt = only_write(plan_listings("rentix", rentix(), changed, accepted_as(first), {}).writes)
    # The write failed: nothing new was accepted, so the retry names the same transition.
    retry = only_write(plan_listings("rentix", rentix(), changed, accepted_as(first), {}).writes)
    assert retry == attempt


def test_returning_to_earlier_content_is_a_new_key() -> None:
    a = only_write(plan_listings("rentix", rentix(), [live("apt-1")], {}, {}).writes)
    b = only_write(plan_listings("rentix", rentix(), [priced("apt-1", 600)],
                                 accepted_as(a), {}).writes)
    back = only_write(plan_listings("rentix", rentix(), [live("apt-1")], accepted_as(b),
                                    {}).writes)
    assert back.digest == a.digest
    assert back.key not in (a.key, b.key)


def test_an_operator_retry_generation_gives_a_new_key_for_the_same_content() -> None:
    plain = only_write(plan_listings("rentix", rentix(), [live("apt-1")], {}, {}).writes)
    retried = only_write(plan_listings("rentix", rentix(), [live("apt-1")], {}, {},
                                       retries={"apt-1": 1}).writes)
    assert retried.digest == plain.digest
    assert retried.key != plain.key


@pytest.mark.parametrize("deletion", ["hidden", "delete", "none"])
def test_deleting_a_listing_the_target_never_accepted_plans_nothing(
    deletion: DeletionBehaviour,
) -> None:
    plan = plan_listings("rentix", rentix(deletion), [gone("apt-1")], {}, {})
    assert plan.writes == [] and plan.invalid == []


def test_deletion_hides_when_delete_behaviour_is_hidden() -> None:
    first = only_write(plan_listings("rentix", rentix(), [live("apt-1")], {}, {}).writes)
    hide = only_write(plan_listings("rentix", rentix("hidden"), [gone("apt-1")],
                                    accepted_as(first), {}).writes)
    assert hide.operation == "hide"
    assert hide.payload == {"externalId": "apt-1", "announcementStatus": "hidden"}
    # Once the portal took the hidden version, the tombstone plans nothing more.
    assert plan_listings("rentix", rentix("hidden"), [gone("apt-1")], accepted_as(hide),
                         {}).writes == []


def test_deletion_deletes_when_delete_behaviour_is_delete() -> None:
    first = only_write(plan_listings("rentix", rentix(), [live("apt-1")], {}, {}).writes)
    delete = only_write(plan_listings("rentix", rentix("delete"), [gone("apt-1")],
                                      accepted_as(first), {}).writes)
    assert delete.operation == "delete"
    assert delete.payload == {"op": "delete", "externalId": "apt-1"}


def test_deletion_sends_nothing_when_delete_behaviour_is_none() -> None:
    first = only_write(plan_listings("rentix", rentix(), [live("apt-1")], {}, {}).writes)
    plan = plan_listings("rentix", rentix("none"), [gone("apt-1")], accepted_as(first), {})
    assert plan.writes == []


def test_an_invalid_listing_is_reported_once_and_not_again_while_quarantined() -> None:
    bad = [live("apt-1", photos=PHOTOS[:2])]  # a public Rentix listing needs 3 photos
    plan = plan_listings("rentix", rentix(), bad, {}, {})
    assert plan.writes == []
    [invalid] = plan.invalid
    assert (invalid.ref, invalid.problem.field) == ("apt-1", "files")

    quarantine = quarantined_as("apt-1", invalid.digest)
    again = plan_listings("rentix", rentix(), bad, {}, quarantine)
    assert again.writes == [] and again.invalid == []

    # Other invalid content is a new problem; valid content goes out despite the quarantine.
    other = plan_listings("rentix", rentix(), [live("apt-1", photos=PHOTOS[:1])], {}, quarantine)
    assert [i.ref for i in other.invalid] == ["apt-1"] and other.invalid[0].digest != invalid.digest
    fixed = plan_listings("rentix", rentix(), [live("apt-1")], {}, quarantine)
    assert [w.ref for w in fixed.writes] == ["apt-1"] and fixed.invalid == []


def test_each_listing_of_a_group_is_planned_on_its_own() -> None:
    first = plan_listings("rentix", rentix(), [live("apt-1"), live("apt-2")], {}, {})
    accepted = {ref: a for w in first.writes for ref, a in accepted_as(w).items()}
    plan = plan_listings("rentix", rentix(),
                         [live("apt-1"), priced("apt-2", 600), live("apt-3")], accepted, {})
    assert [w.ref for w in plan.writes] == ["apt-2", "apt-3"]
    assert {w.received_ms for w in plan.writes} == {NOW}


# -- group-sync targets (Travtus) --

def sync(desired: list[DesiredListing], accepted: dict[str, Accepted] | None = None,
         quarantined: dict[str, Quarantined] | None = None, last_digest: str | None = None,
         retry: int = 0) -> SyncPlan:
    return plan_sync("travtus", TRAVTUS, "g", desired, accepted or {}, quarantined or {},
                     last_digest, NOW, retry)


def test_an_unchanged_group_is_an_unchanged_sync_with_the_same_key() -> None:
    first = sync([live("apt-1"), live("apt-2")])
    assert not first.unchanged and first.refs == ["apt-1", "apt-2"]
    again = sync([live("apt-1"), live("apt-2")], first.records, last_digest=first.digest)
    assert again.unchanged and again.deletions == []
    retry = sync([live("apt-1"), live("apt-2")])  # the first sync failed: same intent
    assert retry.key == first.key


def test_a_changed_group_is_a_sync_with_a_new_key() -> None:
    first = sync([live("apt-1")])
    second = sync([live("apt-1", bedrooms=3)], first.records, last_digest=first.digest)
    assert not second.unchanged
    assert second.key != first.key and second.digest != first.digest
    assert second.listings[0]["bedrooms"] == 3 and second.fresh == ["apt-1"]


def test_a_sync_leaves_out_deleted_and_hidden_listings_and_counts_them_as_deletions() -> None:
    first = sync([live("apt-1"), live("apt-2"), live("apt-3")])
    plan = sync([live("apt-1"), gone("apt-2"), live("apt-3", status="hidden")], first.records,
                last_digest=first.digest)
    assert plan.refs == ["apt-1"]
    assert plan.deletions == ["apt-2", "apt-3"]


def test_a_refused_listing_keeps_its_last_accepted_version_in_the_sync() -> None:
    first = sync([live("apt-1", bedrooms=1), live("apt-2")])
    plan = sync([live("apt-1", property_subtype="house", bedrooms=3),
                 live("apt-2", bedrooms=5)], first.records, last_digest=first.digest)
    [invalid] = plan.invalid
    assert (invalid.ref, invalid.problem.error_type) == ("apt-1", "invalid_unit_type")
    assert plan.records["apt-1"] == first.records["apt-1"]  # kept, not deleted
    assert plan.deletions == [] and plan.fresh == ["apt-2"]
    assert [item["bedrooms"] for item in plan.listings] == [1, 5]
    # While that content is quarantined it is not reported again.
    quiet = sync([live("apt-1", property_subtype="house", bedrooms=3), live("apt-2", bedrooms=5)],
                 first.records, quarantined_as("apt-1", invalid.digest), first.digest)
    assert quiet.invalid == [] and quiet.key == plan.key


def test_a_refused_listing_the_portal_never_accepted_is_left_out_not_deleted() -> None:
    plan = sync([live("apt-1", property_subtype="house"), live("apt-2")])
    assert plan.refs == ["apt-2"] and plan.deletions == []
    assert [i.ref for i in plan.invalid] == ["apt-1"]


def test_an_operator_retry_of_a_sync_gives_a_new_key() -> None:
    assert sync([live("apt-1")], retry=1).key != sync([live("apt-1")]).key


# -- guards against destructive syncs --

def accepted_group(count: int) -> dict[str, Accepted]:
    return sync([live(f"apt-{i}") for i in range(count)]).records


def test_guard_holds_a_sync_that_would_be_empty() -> None:
    accepted = accepted_group(2)
    plan = sync([gone("apt-0"), gone("apt-1")], accepted)
    reason = guard_reason(plan, len(accepted), GUARD)
    assert reason is not None and "empty" in reason


def test_guard_holds_a_sync_that_deletes_more_than_max_delete_count() -> None:
    accepted = accepted_group(40)
    plan = sync([live(f"apt-{i}") for i in range(34)], accepted)  # six deletions of 40
    reason = guard_reason(plan, len(accepted), GUARD)
    assert reason is not None and "max_delete_count = 5" in reason


def test_guard_holds_a_sync_that_deletes_more_than_max_delete_fraction() -> None:
    accepted = accepted_group(4)
    plan = sync([live("apt-0"), live("apt-1")], accepted)  # two of four
    reason = guard_reason(plan, len(accepted), GUARD)
    assert reason is not None and "max_delete_fraction = 0.2" in reason


def test_guard_lets_a_sync_within_both_limits_go() -> None:
    accepted = accepted_group(10)
    plan = sync([live(f"apt-{i}") for i in range(8)], accepted)  # two of ten: exactly 0.2
    assert guard_reason(plan, len(accepted), GUARD) is None
    assert guard_reason(sync([live("apt-0")]), 0, GUARD) is None  # a first sync deletes nothing
