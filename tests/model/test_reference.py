"""The reference model on hand-written cases from the contract (section 2) and the ingest
fold's documented rules."""

from __future__ import annotations

from typing import Any

from tests.model.reference import Item, Received, Reference, final_state

HORIZON = 30_000
DEDUPE = 3_600_000
T0 = 1_000_000  # model times are plain numbers: no clock is read


def body(ref: str, price: int, status: str = "active") -> dict[str, Any]:
    return {"external_ref": ref, "status": status, "price": {"amount": price}}


class Feed:
    """Deliveries with fresh webhook ids, received one millisecond apart."""

    def __init__(self) -> None:
        self.events: list[Received] = []

    def add(self, kind: str, group: str, occurred: int, *items: Item,
            webhook_id: str | None = None, received: int | None = None) -> Received:
        n = len(self.events)
        event = Received(webhook_id or f"wh-{n}", T0 + n if received is None else received,
                         kind, group, occurred, items)  # type: ignore[arg-type]
        self.events.append(event)
        return event

    def upsert(self, group: str, ref: str, occurred: int, version: int | None = None,
               price: int = 500, status: str = "active", **kw: Any) -> Received:
        return self.add("upsert", group, occurred, Item(ref, version, body(ref, price, status)),
                        **kw)

    def delete(self, group: str, ref: str, occurred: int, version: int | None = None,
               **kw: Any) -> Received:
        return self.add("delete", group, occurred, Item(ref, version), **kw)

    def snapshot(self, group: str, occurred: int, *items: tuple[str, int | None, int],
                 **kw: Any) -> Received:
        return self.add("snapshot", group, occurred,
                        *(Item(ref, v, body(ref, price)) for ref, v, price in items), **kw)

    def state(self) -> dict[str, dict[str, int]]:
        return {g: {ref: b["price"]["amount"] for ref, b in listings.items()}
                for g, listings in final_state(self.events, HORIZON, DEDUPE).items()}


def test_version_orders_a_listings_events_whatever_their_times() -> None:
    feed = Feed()
    feed.upsert("g", "a", T0 + 10, version=2, price=2)
    feed.upsert("g", "a", T0 + 20, version=1, price=1)  # later, but an older version
    assert feed.state() == {"g": {"a": 2}}


def test_without_versions_occurred_at_orders_and_the_later_arrival_wins_a_tie() -> None:
    feed = Feed()
    feed.upsert("g", "a", T0 + 20, price=1)
    feed.upsert("g", "a", T0 + 10, price=2)  # older: changes nothing
    assert feed.state() == {"g": {"a": 1}}
    feed.upsert("g", "a", T0 + 20, price=3)  # the same time: the later arrival wins
    assert feed.state() == {"g": {"a": 3}}


def test_equal_versions_fall_back_to_occurred_at_and_one_side_without_a_version_too() -> None:
    feed = Feed()
    feed.upsert("g", "a", T0 + 20, version=5, price=1)
    feed.upsert("g", "a", T0 + 10, version=5, price=2)
    assert feed.state() == {"g": {"a": 1}}
    feed.upsert("g", "a", T0 + 30, price=3)  # no version: occurred_at decides
    assert feed.state() == {"g": {"a": 3}}


def test_versions_at_the_edges_of_their_range() -> None:
    feed = Feed()
    feed.upsert("g", "a", T0 + 10, version=2**53 - 1, price=1)
    feed.upsert("g", "a", T0 + 20, version=0, price=2)
    feed.upsert("g", "a", T0 + 30, version=2**53 - 2, price=3)
    assert feed.state() == {"g": {"a": 1}}


def test_a_redelivery_within_the_dedupe_window_changes_nothing() -> None:
    feed = Feed()
    first = feed.upsert("g", "a", T0 + 10, price=1)
    feed.delete("g", "a", T0 + 20)
    # The same webhook again, with a newer time it never had: still nothing.
    feed.add("upsert", "g", T0 + 30, *first.items, webhook_id=first.webhook_id)
    assert feed.state() == {}
    model = Reference(HORIZON, DEDUPE)
    for event in feed.events[:2]:
        model.receive(event)
    assert model.receive(feed.events[2]) == {"a": "duplicate"}


def test_a_redelivery_after_the_window_is_folded_again_as_any_event() -> None:
    feed = Feed()
    first = feed.upsert("g", "a", T0 + 10, price=1)
    feed.upsert("g", "a", T0 + 5, price=2)  # older: stale
    late = T0 + DEDUPE + 100
    feed.add("upsert", "g", late - 10, *first.items, webhook_id=first.webhook_id,
             received=late)
    assert feed.state() == {"g": {"a": 1}}


def test_an_event_older_than_the_horizon_at_receipt_is_stale() -> None:
    feed = Feed()
    feed.upsert("g", "a", T0 - HORIZON - 1, price=1)
    assert feed.state() == {}
    feed.upsert("g", "b", T0 + 1 - HORIZON, price=2)  # just within the horizon
    assert feed.state() == {"g": {"b": 2}}


def test_a_deletion_applies_wherever_the_listing_is() -> None:
    feed = Feed()
    feed.upsert("north", "a", T0 + 10)
    feed.delete("south", "a", T0 + 20)
    assert feed.state() == {}
    feed.upsert("north", "a", T0 + 15)  # from before the deletion: stale
    assert feed.state() == {}


def test_a_listing_whose_group_changes_has_moved() -> None:
    feed = Feed()
    feed.upsert("north", "a", T0 + 10, price=1)
    feed.upsert("north", "b", T0 + 10, price=1)
    feed.upsert("south", "a", T0 + 20, price=2)
    assert feed.state() == {"north": {"b": 1}, "south": {"a": 2}}
    feed.upsert("north", "a", T0 + 15, price=3)  # older than the move: it stays moved
    assert feed.state() == {"north": {"b": 1}, "south": {"a": 2}}


def test_hidden_listings_are_left_out_and_come_back_when_shown() -> None:
    feed = Feed()
    feed.upsert("g", "a", T0 + 10, price=1, status="hidden")
    assert feed.state() == {}
    feed.upsert("g", "a", T0 + 20, price=2)
    assert feed.state() == {"g": {"a": 2}}


def test_a_snapshot_deletes_the_groups_absent_listings_unless_changed_after_it() -> None:
    feed = Feed()
    for ref in "abc":
        feed.upsert("g", ref, T0 + 10)
    feed.upsert("g", "c", T0 + 40, price=4)  # changed after the snapshot below
    feed.upsert("other", "x", T0 + 10)
    feed.snapshot("g", T0 + 30, ("a", None, 7))
    assert feed.state() == {"g": {"a": 7, "c": 4}, "other": {"x": 500}}


def test_a_listing_changed_at_the_snapshots_time_is_deleted_the_snapshot_arrived_later() -> None:
    feed = Feed()
    feed.upsert("g", "a", T0 + 30)
    feed.snapshot("g", T0 + 30, ("b", None, 1))
    assert feed.state() == {"g": {"b": 1}}


def test_an_empty_snapshot_deletes_the_whole_group() -> None:
    feed = Feed()
    feed.upsert("g", "a", T0 + 10)
    feed.upsert("g", "b", T0 + 10)
    feed.snapshot("g", T0 + 20)
    assert feed.state() == {}


def test_nothing_from_before_a_snapshot_that_deleted_a_listing_brings_it_back() -> None:
    feed = Feed()
    feed.upsert("g", "a", T0 + 10, version=1)
    feed.snapshot("g", T0 + 30)
    feed.upsert("g", "a", T0 + 20, version=9)  # a newer version, from before the snapshot
    assert feed.state() == {}
    feed.upsert("g", "a", T0 + 30, version=2, price=3)  # at its time: the later arrival
    assert feed.state() == {"g": {"a": 3}}


def test_a_snapshot_that_finds_a_listing_deleted_raises_its_floor() -> None:
    feed = Feed()
    feed.upsert("g", "a", T0 + 10, version=1)
    feed.delete("g", "a", T0 + 20, version=2)
    feed.snapshot("g", T0 + 40)
    feed.upsert("g", "a", T0 + 30, version=3)
    assert feed.state() == {}


def test_a_snapshot_moves_listings_it_names_into_its_group() -> None:
    feed = Feed()
    feed.upsert("north", "a", T0 + 10, price=1)
    feed.snapshot("south", T0 + 20, ("a", None, 2))
    feed.snapshot("north", T0 + 30)  # a has left north: nothing to delete there
    assert feed.state() == {"south": {"a": 2}}


def test_a_snapshot_older_than_the_listings_time_leaves_it_as_it_is() -> None:
    feed = Feed()
    feed.upsert("g", "a", T0 + 30, price=1)
    feed.snapshot("g", T0 + 20, ("a", None, 2))  # stale for a
    assert feed.state() == {"g": {"a": 1}}


def test_outcomes_per_listing() -> None:
    model = Reference(HORIZON, DEDUPE)
    feed = Feed()
    feed.upsert("g", "a", T0 + 10)
    feed.upsert("g", "b", T0 + 10)
    feed.snapshot("g", T0 + 5, ("a", None, 1))  # a: stale; b changed after it: kept
    feed.snapshot("g", T0 + 20, ("a", None, 2))  # a applied; b deleted
    results = [model.receive(event) for event in feed.events]
    assert results[2] == {"a": "stale"}
    assert results[3] == {"a": "applied", "b": "applied"}
    assert model.portals() == {"g": {"a": {"external_ref": "a", "status": "active",
                                           "price": {"amount": 2}}}}
