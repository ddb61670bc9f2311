"""A reference model of what the bridge must deliver: a pure function from the events it
received (in arrival order) to each group's live listings, following the contract's ordering
rules (../shared/contract.md section 2, the ingest fold's documentation in
``bridge/ingest/store.py``). No Redis, no portals: the state machine test
(``tests/model/test_state_machine.py``) checks the real bridge against it.

The rules, per listing:

- a redelivery of a webhook id already accepted within the dedupe window changes nothing (it
  is accepted anew once the window has passed);
- an event whose occurred_at is older than the retention horizon when it is received is stale;
- the newest event wins: by version when both have one and they differ, else by occurred_at;
  at equal times the later arrival wins;
- a ``listing.deleted`` deletes the listing wherever it is (its group stays the one it had);
- an upsert into another group moves the listing: it leaves the old group;
- a ``group.snapshot`` upserts its listings (each at the snapshot's time) and deletes the
  group's other listings unless they changed after it (at equal times the snapshot, the later
  arrival, wins); no event from before a snapshot that left a listing out (and deleted it, or
  found it deleted) brings it back, whatever its version;
- a listing whose status is ``hidden`` is left out of the portals, as a deleted one is;
- a deleted listing is remembered for the horizon after the later of its time and its floor,
  and longer while the bridge still keeps more than its tombstone (a deletion not every target
  is done with is never compacted): an event received once a compacted tombstone's lifetime is
  over finds nothing to order it by, whatever its version (``bridge/delivery/tombstones.py``).
  Whether the bridge compacted it is the caller's to say (``compacted``); without it the model
  never forgets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Kind = Literal["upsert", "delete", "snapshot"]
Outcome = Literal["applied", "stale", "duplicate"]
# Does the bridge keep only a compacted tombstone of this ref (or nothing at all)?
Compacted = Callable[[str], bool]


@dataclass(frozen=True)
class Item:
    """One listing an event names: its ref, version (None: absent) and body (None for a
    deletion)."""

    ref: str
    version: int | None = None
    body: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Received:
    """One delivery of a webhook as the bridge received it."""

    webhook_id: str
    received_ms: int
    kind: Kind
    group: str
    occurred_ms: int
    items: tuple[Item, ...] = ()


@dataclass(frozen=True)
class ListingState:
    group: str
    version: int | None
    occurred_ms: int
    deleted: bool
    body: Mapping[str, Any] | None
    floor: int | None = None  # the latest snapshot that left the listing out, deleted

    @property
    def live(self) -> bool:
        return not self.deleted and self.body is not None and \
            self.body.get("status", "active") != "hidden"


@dataclass
class Reference:
    """The model's state: fold events with :meth:`receive`, read with :meth:`portals`."""

    horizon_ms: int
    dedupe_ms: int
    listings: dict[str, ListingState] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)  # webhook id -> accepted at

    def receive(self, event: Received, compacted: Compacted | None = None
                ) -> dict[str, Outcome]:
        """Accept and fold one delivery; what it did to each listing it names (a snapshot's
        absent listings that it deleted are named too)."""
        if not self.accept(event):
            return dict.fromkeys((item.ref for item in event.items), "duplicate")
        return self.fold(event, compacted)

    def accept(self, event: Received) -> bool:
        """The webhook's dedupe: False for a redelivery within the dedupe window of the
        webhook id's acceptance (nothing is folded), else True."""
        first = self.seen.get(event.webhook_id)
        if first is not None and event.received_ms < first + self.dedupe_ms:
            return False
        self.seen[event.webhook_id] = event.received_ms
        return True

    def fold(self, event: Received, compacted: Compacted | None = None) -> dict[str, Outcome]:
        """Fold an accepted delivery (``compacted``: as the bridge stands when it folds it)."""
        if event.occurred_ms < event.received_ms - self.horizon_ms:
            return dict.fromkeys((item.ref for item in event.items), "stale")
        for ref in {item.ref for item in event.items} | (
                {r for r, s in self.listings.items() if s.group == event.group}
                if event.kind == "snapshot" else set()):
            self._expire(ref, event.received_ms, compacted)
        if event.kind == "snapshot":
            return self._snapshot(event)
        item = event.items[0]
        deleted = event.kind == "delete"
        return {item.ref: self._apply(item, event.occurred_ms, event.group, deleted)}

    def _expire(self, ref: str, received: int, compacted: Compacted | None) -> None:
        """Forget a deleted listing whose compacted tombstone's lifetime was over when this
        event was received."""
        cur = self.listings.get(ref)
        if cur is None or not cur.deleted or compacted is None:
            return
        if received > max(cur.occurred_ms, cur.floor or 0) + self.horizon_ms and compacted(ref):
            del self.listings[ref]

    def _apply(self, item: Item, occurred: int, group: str, deleted: bool) -> Outcome:
        cur = self.listings.get(item.ref)
        floor = None
        body = item.body
        if cur is not None:
            if cur.floor is not None and occurred < cur.floor:
                return "stale"
            if not newer(item.version, occurred, cur.version, cur.occurred_ms):
                return "stale"
            if deleted:
                group = cur.group  # a deletion applies wherever the listing is
                body = cur.body
            floor = cur.floor
        self.listings[item.ref] = ListingState(group, item.version, occurred, deleted, body,
                                               floor)
        return "applied"

    def _snapshot(self, event: Received) -> dict[str, Outcome]:
        results: dict[str, Outcome] = {}
        present = set()
        for item in event.items:
            present.add(item.ref)
            results[item.ref] = self._apply(item, event.occurred_ms, event.group, False)
        at = event.occurred_ms
        for ref, cur in list(self.listings.items()):
            if cur.group != event.group or ref in present:
                continue
            if cur.deleted:
                if cur.floor is None or cur.floor < at:
                    self.listings[ref] = replace(cur, floor=at)
            elif cur.occurred_ms <= at:
                self.listings[ref] = replace(cur, deleted=True, occurred_ms=at, floor=at)
                results[ref] = "applied"
        return results

    def portals(self) -> dict[str, dict[str, Mapping[str, Any]]]:
        """Per group, the live listings (ref -> body) the portals must hold: deleted and
        hidden ones left out; groups without live listings left out."""
        out: dict[str, dict[str, Mapping[str, Any]]] = {}
        for ref, state in sorted(self.listings.items()):
            if state.live:
                assert state.body is not None
                out.setdefault(state.group, {})[ref] = state.body
        return out


def newer(version: int | None, occurred: int, held_version: int | None, held_at: int) -> bool:
    """Does an event (version, occurred) replace what is held? Versions order when both have
    one and they differ; else occurred_at, the later arrival winning at equal times."""
    if version is not None and held_version is not None and version != held_version:
        return version > held_version
    return occurred >= held_at


def final_state(events: Iterable[Received], horizon_ms: int, dedupe_ms: int
                ) -> dict[str, dict[str, Mapping[str, Any]]]:
    """Each group's live listings after these deliveries, in arrival order."""
    model = Reference(horizon_ms, dedupe_ms)
    for event in events:
        model.receive(event)
    return model.portals()
