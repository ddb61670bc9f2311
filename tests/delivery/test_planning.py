"""The pure planner (bridge.delivery.planning) with the real adapters, built offline: what a
flush sends for a given desired state, accepted state, quarantine and standing intents."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bridge import constants as k
from bridge.delivery.desired import DesiredListing, decode_fields
from bridge.delivery.idempotency import Intent
from bridge.delivery.ledger import Accepted, Deletion, Quarantined
from bridge.delivery.planning import (
    UNREADABLE,
    ListingWrite,
    SyncPlan,
    deletion_cause,
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


def live(ref: str, group: str = "g", **changes: Any) -> DesiredListing:
    return DesiredListing(ref=ref, group=group, version=1, occurred_ms=NOW, deleted=False,
                          body=listing(external_ref=ref, **changes), received_ms=NOW)


def priced(ref: str, amount: int) -> DesiredListing:
    return live(ref, price={"amount": amount, "currency": "EUR", "period": "monthly"})


def gone(ref: str, cause: str | None = k.CAUSE_DELETED) -> DesiredListing:
    return DesiredListing(ref=ref, group="g", version=2, occurred_ms=NOW, deleted=True,
                          body=None, received_ms=NOW, cause=cause)


def accepted_as(write: ListingWrite) -> dict[str, Accepted]:
    """What the ledger holds once the target accepted ``write``."""
    return {write.ref: Accepted(write.digest, write.payload, NOW)}


def quarantined_as(ref: str, digest: str) -> dict[str, Quarantined]:
    return {ref: Quarantined(digest, "g", "validation_failed", "refused", "files", NOW)}


def only_write(plan_writes: list[ListingWrite]) -> ListingWrite:
    [write] = plan_writes
    return write


def write_for(desired: list[DesiredListing], accepted: dict[str, Accepted] | None = None,
              intents: dict[str, Intent] | None = None,
              deletion: DeletionBehaviour = "hidden") -> ListingWrite:
    return only_write(plan_listings("rentix", rentix(deletion), desired, accepted or {}, {},
                                    intents).writes)


# -- per-listing targets (Rentix) --

def test_content_the_target_already_accepted_plans_nothing() -> None:
    first = write_for([live("apt-1")])
    again = plan_listings("rentix", rentix(), [live("apt-1")], accepted_as(first), {})
    assert again.writes == [] and again.invalid == []


def test_changed_content_plans_one_upsert_with_a_new_key() -> None:
    first = write_for([live("apt-1")])
    second = write_for([priced("apt-1", 600)], accepted_as(first))
    assert second.operation == "upsert"
    assert second.digest != first.digest
    assert second.key != first.key
    assert second.base == first.digest and second.new_intent


def test_a_retry_of_the_same_intent_plans_the_same_key() -> None:
    first = write_for([live("apt-1")])
    changed = [priced("apt-1", 600)]
    attempt = write_for(changed, accepted_as(first))
    # The write failed or its answer was lost: its intent stands, so the retry is the same write.
    retry = write_for(changed, accepted_as(first), {"apt-1": attempt.intent})
    assert (retry.key, retry.digest, retry.base) == (attempt.key, attempt.digest, attempt.base)
    assert retry.payload == attempt.payload
    assert attempt.new_intent and not retry.new_intent


def test_without_a_standing_intent_the_same_write_gets_a_fresh_key_each_time() -> None:
    # Keys are never derived from content: only a recorded intent makes a key repeat.
    first, second = write_for([live("apt-1")]), write_for([live("apt-1")])
    assert first.digest == second.digest
    assert first.key != second.key and first.key.startswith("lb-")


def test_a_standing_intent_over_another_base_is_not_reused() -> None:
    a = write_for([live("apt-1")])
    b = write_for([priced("apt-1", 600)], accepted_as(a))
    # An intent to write B over nothing stands, but the target now holds A: another write.
    stale = Intent(b.digest, "", "lb-stale")
    again = write_for([priced("apt-1", 600)], accepted_as(a), {"apt-1": stale})
    assert again.digest == b.digest and again.key != "lb-stale" and again.new_intent


def test_returning_to_earlier_content_is_a_new_key() -> None:
    a = write_for([live("apt-1")])
    b = write_for([priced("apt-1", 600)], accepted_as(a))
    back = write_for([live("apt-1")], accepted_as(b))
    assert back.digest == a.digest
    assert back.key not in (a.key, b.key)


def test_a_b_a_b_with_each_intent_settled_never_repeats_a_key() -> None:
    contents = [live("apt-1"), priced("apt-1", 600)] * 2
    accepted: dict[str, Accepted] = {}
    intents: dict[str, Intent] = {}
    writes: list[ListingWrite] = []
    for content in contents:
        write = write_for([content], accepted, intents)
        intents[write.ref] = write.intent  # recorded before the call goes out
        # A retry before the answer came back reuses the key.
        assert write_for([content], accepted, intents).key == write.key
        accepted = accepted_as(write)  # the target accepted: the intent is settled
        del intents[write.ref]
        writes.append(write)
    assert writes[0].digest == writes[2].digest and writes[1].digest == writes[3].digest
    assert writes[1].base == writes[3].base  # B over A twice: the same transition, twice
    assert len({w.key for w in writes}) == 4


def test_a_standing_intent_for_other_content_resends_what_the_ledger_says_is_held() -> None:
    a = write_for([live("apt-1")])
    b = write_for([priced("apt-1", 600)], accepted_as(a))
    # The ledger says the portal holds A, but a write of B over A is in doubt (it may have
    # landed): without the intent nothing would go; with it, A goes again under a new key.
    assert plan_listings("rentix", rentix(), [live("apt-1")], accepted_as(a), {}).writes == []
    resend = write_for([live("apt-1")], accepted_as(a), {"apt-1": b.intent})
    assert resend.digest == a.digest and resend.operation == "upsert"
    assert resend.key not in (a.key, b.key) and resend.new_intent


@pytest.mark.parametrize("deletion", ["hidden", "delete", "none"])
def test_deleting_a_listing_the_target_never_accepted_plans_nothing(
    deletion: DeletionBehaviour,
) -> None:
    plan = plan_listings("rentix", rentix(deletion), [gone("apt-1")], {}, {})
    assert plan.writes == [] and plan.invalid == []


@pytest.mark.parametrize(("deletion", "operation"), [("hidden", "hide"), ("delete", "delete")])
def test_a_deleted_listing_never_accepted_but_with_a_standing_intent_is_deleted(
    deletion: DeletionBehaviour, operation: str,
) -> None:
    # Its create may have reached the portal: the bridge takes it down to be sure.
    create = write_for([live("apt-1")])
    down = write_for([gone("apt-1")], {}, {"apt-1": create.intent}, deletion)
    assert down.operation == operation
    assert down.key != create.key and down.base == ""


def test_deletion_hides_when_delete_behaviour_is_hidden() -> None:
    first = write_for([live("apt-1")])
    hide = write_for([gone("apt-1")], accepted_as(first), deletion="hidden")
    assert hide.operation == "hide"
    assert hide.payload == {"externalId": "apt-1", "announcementStatus": "hidden"}
    # Once the portal took the hidden version, the tombstone plans nothing more.
    assert plan_listings("rentix", rentix("hidden"), [gone("apt-1")], accepted_as(hide),
                         {}).writes == []


def test_deletion_deletes_when_delete_behaviour_is_delete() -> None:
    first = write_for([live("apt-1")])
    delete = write_for([gone("apt-1")], accepted_as(first), deletion="delete")
    assert delete.operation == "delete"
    assert delete.payload == {"op": "delete", "externalId": "apt-1"}


def test_deletion_sends_nothing_when_delete_behaviour_is_none() -> None:
    first = write_for([live("apt-1")])
    plan = plan_listings("rentix", rentix("none"), [gone("apt-1")], accepted_as(first), {},
                         {"apt-1": first.intent})
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


def unreadable(ref: str) -> DesiredListing:
    """A listing whose stored version Lua kept as a double (issue 25)."""
    decoded = decode_fields(ref, ["g", "1e+20", str(NOW), "0", None, str(NOW), None],
                            orjson.dumps(listing(external_ref=ref)))
    assert decoded is not None and decoded.unreadable is not None
    return decoded


def test_an_unreadable_listing_is_refused_once_and_nothing_is_written_for_it() -> None:
    first = write_for([live("apt-1")])
    plan = plan_listings("rentix", rentix(), [unreadable("apt-1"), live("apt-2")],
                         accepted_as(first), {}, {"apt-1": first.intent})
    assert [w.ref for w in plan.writes] == ["apt-2"]  # no hide, no upsert for apt-1
    [invalid] = plan.invalid
    assert (invalid.ref, invalid.problem.error_type, invalid.problem.field) == (
        "apt-1", UNREADABLE, "v")
    assert invalid.problem.message == "the stored version (v) is '1e+20': not an integer"
    again = plan_listings("rentix", rentix(), [unreadable("apt-1")], accepted_as(first),
                          quarantined_as("apt-1", invalid.digest))
    assert again.writes == [] and again.invalid == []


def test_a_body_that_does_not_map_is_refused_as_unreadable_not_raised() -> None:
    odd = DesiredListing(ref="apt-1", group="g", version=1, occurred_ms=NOW, deleted=False,
                         body={"price": "cheap"}, received_ms=NOW)
    for plan in (plan_listings("rentix", rentix(), [odd], {}, {}), sync([odd])):
        [invalid] = plan.invalid
        assert (invalid.problem.error_type, invalid.problem.field) == (UNREADABLE, "body")
        assert "does not map to a " in invalid.problem.message


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
         intent: Intent | None = None, elsewhere: dict[str, DesiredListing] | None = None
         ) -> SyncPlan:
    return plan_sync(TRAVTUS, "g", desired, accepted or {}, quarantined or {}, last_digest, NOW,
                     intent, elsewhere)


def test_an_unchanged_group_is_an_unchanged_sync_and_a_retry_keeps_its_key() -> None:
    first = sync([live("apt-1"), live("apt-2")])
    assert not first.unchanged and first.refs == ["apt-1", "apt-2"] and first.new_intent
    again = sync([live("apt-1"), live("apt-2")], first.records, last_digest=first.digest)
    assert again.unchanged and again.deletions == []
    # The first sync failed with its intent standing: the retry is the same write.
    retry = sync([live("apt-1"), live("apt-2")], intent=first.intent)
    assert retry.key == first.key and retry.digest == first.digest and not retry.new_intent


def test_an_unchanged_group_with_a_sync_of_other_content_in_doubt_is_sent_again() -> None:
    first = sync([live("apt-1")])
    second = sync([live("apt-1", bedrooms=3)], first.records, last_digest=first.digest)
    # The second sync may have reached the portal; the group is back to the first content.
    plan = sync([live("apt-1")], first.records, last_digest=first.digest, intent=second.intent)
    assert not plan.unchanged and plan.digest == first.digest
    assert plan.key not in (first.key, second.key)


def test_without_a_standing_intent_a_sync_gets_a_fresh_key() -> None:
    # An operator's retry drops the refused sync's intent: the same content gets a new key.
    assert sync([live("apt-1")]).key != sync([live("apt-1")]).key


def test_a_changed_group_is_a_sync_with_a_new_key() -> None:
    first = sync([live("apt-1")])
    second = sync([live("apt-1", bedrooms=3)], first.records, last_digest=first.digest,
                  intent=first.intent)
    assert not second.unchanged
    assert second.key != first.key and second.digest != first.digest
    assert second.base == first.digest
    assert second.listings[0]["bedrooms"] == 3 and second.fresh == ["apt-1"]


def test_a_sync_leaves_out_deleted_and_hidden_listings_and_counts_them_as_deletions() -> None:
    first = sync([live("apt-1"), live("apt-2"), live("apt-3")])
    plan = sync([live("apt-1"), gone("apt-2"), live("apt-3", status="hidden")], first.records,
                last_digest=first.digest)
    assert plan.refs == ["apt-1"]
    assert plan.deleted_refs == ["apt-2", "apt-3"]


def test_a_refused_listing_keeps_its_last_accepted_version_in_the_sync() -> None:
    first = sync([live("apt-1", bedrooms=1), live("apt-2")])
    plan = sync([live("apt-1", property_subtype="house", bedrooms=3),
                 live("apt-2", bedrooms=5)], first.records, last_digest=first.digest)
    [invalid] = plan.invalid
    assert (invalid.ref, invalid.problem.error_type) == ("apt-1", "invalid_unit_type")
    assert plan.records["apt-1"] == first.records["apt-1"]  # kept, not deleted
    assert plan.deletions == [] and plan.fresh == ["apt-2"]
    assert [item["bedrooms"] for item in plan.listings] == [1, 5]
    # While that content is quarantined it is not reported again, and the sync is the same.
    quiet = sync([live("apt-1", property_subtype="house", bedrooms=3), live("apt-2", bedrooms=5)],
                 first.records, quarantined_as("apt-1", invalid.digest), first.digest,
                 plan.intent)
    assert quiet.invalid == [] and quiet.key == plan.key and quiet.digest == plan.digest


def test_a_refused_listing_the_portal_never_accepted_is_left_out_not_deleted() -> None:
    plan = sync([live("apt-1", property_subtype="house"), live("apt-2")])
    assert plan.refs == ["apt-2"] and plan.deletions == []
    assert [i.ref for i in plan.invalid] == ["apt-1"]


def test_an_unreadable_listing_keeps_what_the_portal_holds_of_it_in_the_sync() -> None:
    first = sync([live("apt-1"), live("apt-2")])
    plan = sync([unreadable("apt-1"), live("apt-2", bedrooms=5)], first.records,
                last_digest=first.digest)
    [invalid] = plan.invalid
    assert (invalid.ref, invalid.problem.error_type) == ("apt-1", UNREADABLE)
    assert plan.records["apt-1"] == first.records["apt-1"]  # neither sent anew nor deleted
    assert plan.deletions == [] and plan.fresh == ["apt-2"]
    never = sync([unreadable("apt-1"), live("apt-2")])
    assert never.refs == ["apt-2"] and never.deletions == []
    # Should the portal hold it unbeknown to the ledger, a sync leaving it out says why.
    cause = deletion_cause("apt-1", "g", unreadable("apt-1"), None)
    assert cause.cause == "inferred" and "'1e+20'" in cause.reason


# -- why a sync deletes --

def accepted_group(count: int) -> dict[str, Accepted]:
    return sync([live(f"apt-{i}") for i in range(count)]).records


def test_each_deletion_of_a_sync_carries_its_cause() -> None:
    accepted = accepted_group(6)
    plan = sync(
        [live("apt-0"),
         gone("apt-1", k.CAUSE_DELETED),
         gone("apt-2", k.CAUSE_SNAPSHOT),
         live("apt-3", status="hidden")],
        accepted, last_digest="s0",
        # apt-4 now lives in group h; apt-5 is no member and the bridge knows nothing of it.
        elsewhere={"apt-4": live("apt-4", group="h")})
    assert [(d.ref, d.cause) for d in plan.deletions] == [
        ("apt-1", "explicit"), ("apt-2", "inferred"), ("apt-3", "explicit"),
        ("apt-4", "explicit"), ("apt-5", "inferred")]
    reasons = {d.ref: d.reason for d in plan.deletions}
    assert reasons["apt-1"] == "deleted in the CRM"
    assert reasons["apt-2"] == "absent from the group's latest snapshot"
    assert reasons["apt-3"] == "hidden in the CRM"
    assert reasons["apt-4"] == "moved to group h"


def test_a_non_member_whose_desired_state_still_names_this_group_is_an_inferred_deletion() -> None:
    assert deletion_cause("apt-1", "g", None, live("apt-1", group="g")).cause == "inferred"
    assert deletion_cause("apt-1", "g", None, None) == Deletion(
        "apt-1", "inferred", "the bridge no longer holds this listing")


# -- guards against destructive syncs --

def guarded(plan: SyncPlan, accepted: dict[str, Accepted],
            guard: GuardSettings = GUARD) -> str | None:
    return guard_reason(plan.deletions, len(plan.listings), len(accepted), guard)


def test_guard_holds_a_sync_that_would_be_empty() -> None:
    accepted = accepted_group(2)
    plan = sync([gone("apt-0"), gone("apt-1")], accepted)  # both explicit: still held
    reason = guarded(plan, accepted)
    assert reason is not None and "empty" in reason
    # Even with no deletions at all (nothing was accepted), an empty sync is held.
    assert guard_reason([], 0, 0, GUARD) is not None


def test_guard_lets_an_explicit_delete_and_a_move_out_of_six_go() -> None:
    accepted = accepted_group(6)
    plan = sync([live(f"apt-{i}") for i in range(4)] + [gone("apt-4")], accepted,
                elsewhere={"apt-5": live("apt-5", group="h")})
    assert [d.cause for d in plan.deletions] == ["explicit", "explicit"]
    # Two of six is above max_delete_fraction, but the CRM asked for both.
    assert guarded(plan, accepted) is None


def test_guard_holds_a_sync_whose_inferred_deletions_exceed_max_delete_fraction() -> None:
    accepted = accepted_group(4)
    plan = sync([live("apt-0"), live("apt-1"), gone("apt-2", k.CAUSE_SNAPSHOT),
                 gone("apt-3", k.CAUSE_SNAPSHOT)], accepted)  # two of four, inferred
    reason = guarded(plan, accepted)
    assert reason is not None and "max_delete_fraction = 0.2" in reason


def test_guard_holds_a_sync_of_explicit_deletions_beyond_max_delete_count() -> None:
    accepted = accepted_group(10)
    plan = sync([live(f"apt-{i}") for i in range(3)]
                + [gone(f"apt-{i}") for i in range(3, 10)], accepted)
    assert len(plan.deletions) == 7 and {d.cause for d in plan.deletions} == {"explicit"}
    reason = guarded(plan, accepted)
    assert reason is not None and "max_delete_count = 5" in reason
    assert guarded(plan, accepted, GuardSettings(max_delete_count=7,
                                                 max_delete_fraction=0.2)) is None
    # Inferred deletions count too: six of forty is within the fraction, not the count.
    many = accepted_group(40)
    reason = guarded(sync([live(f"apt-{i}") for i in range(34)], many), many)
    assert reason is not None and "max_delete_count = 5" in reason


def test_guard_lets_a_sync_within_both_limits_go() -> None:
    accepted = accepted_group(10)
    plan = sync([live(f"apt-{i}") for i in range(8)], accepted)  # two of ten: exactly 0.2
    assert {d.cause for d in plan.deletions} == {"inferred"}
    assert guarded(plan, accepted) is None
    assert guarded(sync([live("apt-0")]), {}) is None  # a first sync deletes nothing
