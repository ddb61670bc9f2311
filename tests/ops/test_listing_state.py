"""Whether a target holds what the bridge wants (bridge.ops.reads.listing_state) is decided by
the planner's own digest: what the planner sends, once accepted, reads "in step"."""

from __future__ import annotations

from typing import Any

from bridge.delivery.desired import DesiredListing
from bridge.delivery.ledger import Accepted, Quarantined
from bridge.delivery.planning import plan_listings, plan_sync
from bridge.ops.reads import listing_state
from bridge.portals import RentixAdapter, TravtusAdapter
from bridge.portals.rentix_mapping import DeletionBehaviour
from tests.support.canonical import PHOTOS, listing

OFFLINE = "http://127.0.0.1:9"  # never called: mapping does no I/O
NOW = 1_800_000_000_000


def rentix(deletion: DeletionBehaviour = "hidden") -> RentixAdapter:
    return RentixAdapter("rentix", f"{OFFLINE}/rentix/api/v1", "k", deletion_behaviour=deletion)


TRAVTUS = TravtusAdapter("travtus", f"{OFFLINE}/travtus", f"{OFFLINE}/t", "id", "secret")


def live(ref: str, **changes: Any) -> DesiredListing:
    return DesiredListing(ref=ref, group="g", version=1, occurred_ms=NOW, deleted=False,
                          body=listing(external_ref=ref, **changes), received_ms=NOW)


def gone(ref: str) -> DesiredListing:
    return DesiredListing(ref=ref, group="g", version=2, occurred_ms=NOW, deleted=True,
                          body=None, received_ms=NOW)


def test_a_rentix_listing_is_in_step_once_the_planners_write_is_accepted() -> None:
    adapter, apt = rentix(), live("apt-1")
    assert listing_state(adapter, apt, None, None).status == "pending"
    [write] = plan_listings("rentix", adapter, [apt], {}, {}).writes
    accepted = Accepted(write.digest, write.payload, NOW)
    state = listing_state(adapter, apt, accepted, None)
    assert (state.status, state.desired_digest, state.accepted) == ("in step", write.digest,
                                                                     accepted)
    # The planner agrees: nothing more to send.
    assert plan_listings("rentix", adapter, [apt], {"apt-1": accepted}, {}).writes == []
    changed = live("apt-1", price={"amount": 900, "currency": "EUR", "period": "monthly"})
    assert listing_state(adapter, changed, accepted, None).status == "pending"


def test_a_travtus_listing_is_in_step_once_the_planners_sync_is_accepted() -> None:
    apt = live("apt-1")
    plan = plan_sync(TRAVTUS, "g", [apt], {}, {}, None, NOW)
    assert listing_state(TRAVTUS, apt, None, None).status == "pending"
    assert listing_state(TRAVTUS, apt, plan.records["apt-1"], None).status == "in step"


def test_refused_content_reads_quarantined_until_the_listing_changes() -> None:
    adapter, bad = rentix(), live("apt-1", photos=PHOTOS[:2])  # Rentix needs 3 photos
    [invalid] = plan_listings("rentix", adapter, [bad], {}, {}).invalid
    entry = Quarantined(invalid.digest, "g", "validation_failed", "refused", "files", NOW)
    assert listing_state(adapter, bad, None, entry).status == "quarantined"
    entry.discarded = True
    assert listing_state(adapter, bad, None, entry).status == "quarantined (discarded)"
    assert listing_state(adapter, live("apt-1"), None, entry).status == "pending"


def test_a_deletion_concerns_only_a_target_that_accepted_the_listing() -> None:
    adapter = rentix()
    assert listing_state(adapter, gone("apt-1"), None, None).status == "absent"
    before = Accepted("an-earlier-version", None, NOW)
    assert listing_state(adapter, gone("apt-1"), before, None).status == "pending"
    [hide] = plan_listings("rentix", adapter, [gone("apt-1")], {"apt-1": before}, {}).writes
    hidden = Accepted(hide.digest, hide.payload, NOW)
    assert listing_state(adapter, gone("apt-1"), hidden, None).status == "in step"
    # A portal told to leave deleted listings alone has nothing to do.
    assert listing_state(rentix("none"), gone("apt-1"), before, None).status == "absent"


def test_a_group_sync_leaving_a_listing_out_reads_pending_removal() -> None:
    before = Accepted("an-earlier-version", None, NOW)
    assert listing_state(TRAVTUS, gone("apt-1"), before, None).status == "pending removal"
    hidden = live("apt-2", status="hidden")
    assert listing_state(TRAVTUS, hidden, before, None).status == "pending removal"
    assert listing_state(TRAVTUS, hidden, None, None).status == "absent"
