"""A flush's part of each listing's story (``bridge trace``): what it decided, per target.

:class:`~bridge.delivery.flush.GroupFlush` calls one hook at each decision point: sent,
queued (for a bulk request), unchanged, quarantined, held, waiting for adoption, rate-limited,
retrying, paused. A hook writes one entry per listing concerned through the flush's fenced
ledger (one write, only while the flush holds its group; none when no listing is concerned).
The outbox's sender tells the bulk call and what came of each operation
(``bridge/delivery/sender.py``). Portal calls reach the stories
through :meth:`~bridge.delivery.ledger.Ledger.record_attempt`, events through the ingest fold.

Which listings a decision concerns: a write's own listing; for a group sync, the listings the
sync changes on the portal (new or other content, or left out); and "unchanged" is said only of
the listings this flush brings news of (changed since the group's previous claim), so a busy
group's flushes do not fill the stories of its quiet listings. A decision that ends a target's
turn (a rate limit, a backoff, a pause) concerns what that turn still had to send: the write at
hand and those after it, or the sync's listings, or, before anything was planned, the news.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from bridge.clock import now_ms
from bridge.delivery.claims import Claim
from bridge.delivery.desired import DesiredListing
from bridge.delivery.ledger import Accepted, Held, Ledger, Quarantined, sync_scope
from bridge.delivery.planning import ListingPlan, ListingWrite, SyncPlan, desired_digest
from bridge.portals import RentixAdapter, TravtusAdapter

Decision = Literal["sent", "queued", "unchanged", "quarantined", "held",
                   "waiting for adoption", "rate-limited", "retrying", "paused"]
DECISIONS: tuple[Decision, ...] = ("sent", "queued", "unchanged", "quarantined", "held",
                                   "waiting for adoption", "rate-limited", "retrying", "paused")


def decision_entry(at: int, target: str, group: str, decision: Decision, *,
                   digest: str | None = None, key: str | None = None,
                   operation: str | None = None, until: int | None = None,
                   detail: str = "") -> dict[str, Any]:
    """One flush decision about one listing, as its story keeps it."""
    return {"kind": "decision", "at": at, "target": target, "group": group,
            "decision": decision, "digest": digest, "key": key, "operation": operation,
            "until": until, "detail": detail}


class FlushTrace:
    """The hooks of one flush. State per target: the listings a stop would leave waiting."""

    def __init__(self, ledger: Ledger, claim: Claim) -> None:
        self._ledger = ledger
        self.group = claim.group
        self._listings = {listing.ref: listing for listing in claim.listings}
        first = claim.first_pending_ms
        # The listings this flush brings news of: changed since the group's previous claim.
        self.news = [listing.ref for listing in claim.listings
                     if first is not None and listing.received_ms >= first]
        self._waiting: dict[str, list[str]] = {}  # target -> what a stop now leaves unsent
        self._synced: dict[str, list[str]] = {}  # group-sync target -> what its sync changes

    async def _note(self, target: str, decision: Decision,
                    items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        at = now_ms()
        await self._ledger.trace([(ref, decision_entry(at, target, self.group, decision,
                                                       **details))
                                  for ref, details in items])

    def _stopping(self, target: str) -> list[str]:
        """What the target's turn leaves unsent if it ends now; nothing more after that."""
        refs = self._waiting.get(target)
        self._waiting[target] = []
        return self.news if refs is None else refs

    # -- planning --

    async def listings_planned(self, target: str, adapter: RentixAdapter, plan: ListingPlan,
                               accepted: dict[str, Accepted],
                               quarantined: dict[str, Quarantined]) -> None:
        """A per-listing target's plan: the news it writes nothing for is unchanged (or still
        quarantined); its writes wait until they are sent."""
        self._waiting[target] = [write.ref for write in plan.writes]
        planned = {*self._waiting[target], *(item.ref for item in plan.invalid)}
        await self._not_sent(target, adapter, planned, accepted, quarantined)

    async def sync_planned(self, target: str, adapter: TravtusAdapter, plan: SyncPlan,
                           accepted: dict[str, Accepted],
                           quarantined: dict[str, Quarantined]) -> None:
        """A group sync's plan: the listings it changes on the portal wait until it is sent;
        the news it leaves as the portal has it is unchanged (or still quarantined). A sync
        the portal refused before, unchanged since, is not sent again."""
        changes = [ref for ref in plan.refs
                   if (held := accepted.get(ref)) is None
                   or held.digest != plan.records[ref].digest] + plan.deleted_refs
        self._waiting[target] = self._synced[target] = changes
        planned = {*changes, *(item.ref for item in plan.invalid)}
        await self._not_sent(target, adapter, planned, accepted, quarantined)
        refused = quarantined.get(sync_scope(self.group))
        if refused is not None and refused.digest == plan.digest and not plan.unchanged:
            await self.quarantined(target, {sync_scope(self.group): refused}, again=True)

    async def _not_sent(self, target: str, adapter: RentixAdapter | TravtusAdapter,
                        planned: set[str], accepted: dict[str, Accepted],
                        quarantined: dict[str, Quarantined]) -> None:
        unchanged: list[tuple[str, dict[str, Any]]] = []
        refused: list[tuple[str, dict[str, Any]]] = []
        for ref in self.news:
            if ref in planned:
                continue
            listing = self._listings[ref]
            want = desired_digest(adapter, listing)
            entry = quarantined.get(ref)
            if want is not None and entry is not None and entry.digest == want:
                refused.append((ref, {"digest": want, "detail": "refused before with this "
                                      f"content: {_problem(entry)}"}))
            else:
                unchanged.append((ref, {"digest": want, "detail": _why_unchanged(
                    listing, want, accepted.get(ref))}))
        await self._note(target, "unchanged", unchanged)
        await self._note(target, "quarantined", refused)

    def turn_to(self, target: str, ref: str) -> None:
        """A per-listing target's turn moves on to ``ref``: the writes before it are done."""
        refs = self._waiting.get(target) or []
        if ref in refs:
            self._waiting[target] = refs[refs.index(ref):]

    # -- sending --

    async def sent(self, target: str, write: ListingWrite) -> None:
        await self._note(target, "sent", [(write.ref, {
            "digest": write.digest, "key": write.key, "operation": write.operation})])

    async def queued(self, target: str, writes: list[ListingWrite]) -> None:
        """Writes put in the target's outbox: the sender's bulk call tells the rest."""
        gone = {write.ref for write in writes}
        self._waiting[target] = [r for r in self._waiting.get(target, []) if r not in gone]
        await self._note(target, "queued", [(write.ref, {
            "digest": write.digest, "key": write.key, "operation": write.operation,
            "detail": "in the outbox, for the next bulk request"}) for write in writes])

    async def sync_sent(self, target: str, plan: SyncPlan) -> None:
        gone = set(plan.deleted_refs)
        await self._note(target, "sent", [(ref, {
            "digest": None if ref in gone else plan.records[ref].digest, "key": plan.key,
            "operation": "sync",
            "detail": "left out of the sync: the portal deletes it" if ref in gone
            else f"in the group's sync {plan.digest}"}) for ref in self._synced.get(target, [])])

    def call_refs(self, target: str, refs: list[str]) -> list[str]:
        """The listings whose stories tell a portal call: a write's own; for a group sync, the
        ones it changes (else this flush's news)."""
        if target not in self._synced:
            return refs
        return self._synced[target] or self.news

    # -- not sending --

    async def unchanged(self, target: str, detail: str) -> None:
        """What the turn had to send is on the portal already."""
        await self._note(target, "unchanged", [(ref, {"detail": detail})
                                               for ref in self._stopping(target)])

    async def quarantined(self, target: str, entries: dict[str, Quarantined],
                          again: bool = False) -> None:
        """The target refused (or would refuse) these listings' content, or the group sync's:
        that one concerns every listing the sync changes."""
        items: list[tuple[str, dict[str, Any]]] = []
        for scope, entry in entries.items():
            detail = ("refused before with this content: " if again else "") + _problem(entry)
            refs = (self._synced.get(target) or self.news
                    if scope == sync_scope(self.group) else [scope])
            items += [(ref, {"digest": entry.digest, "detail": detail}) for ref in refs]
        done = {ref for ref, _ in items}
        self._waiting[target] = [r for r in self._waiting.get(target, []) if r not in done]
        await self._note(target, "quarantined", items)

    async def held(self, target: str, held: Held, whole: bool = True) -> None:
        """A change held for an operator: the listings it would delete, and, when the whole
        turn stops (a group sync held as a whole), the turn's other listings."""
        if whole:
            refs = list(dict.fromkeys([*self._stopping(target), *held.deletions]))
        else:
            refs = held.deletions
            self._waiting[target] = [r for r in self._waiting.get(target, [])
                                     if r not in refs]
        await self._note(target, "held", [(ref, {"digest": held.digest, "detail": held.reason})
                                          for ref in refs])

    async def adoption(self, target: str, ref: str) -> None:
        """A create held while the target adopts hand-made listings."""
        self._waiting[target] = [r for r in self._waiting.get(target, []) if r != ref]
        await self._note(target, "waiting for adoption", [(ref, {
            "detail": "the portal may hold a hand-made listing for it: sent once it is linked "
                      "(bridge link) or adoption ends"})])

    async def rate_limited(self, target: str, until: int) -> int:
        """The turn ends for the target's rate limit; ``until`` (returned) is when it may go
        on."""
        await self._note(target, "rate-limited", [(ref, {
            "until": until, "detail": "the target's rate limit is spent"})
            for ref in self._stopping(target)])
        return until

    async def retrying(self, target: str, until: int, reason: str) -> int:
        """The turn ends after a failure: tried again at ``until`` (returned)."""
        await self._note(target, "retrying", [(ref, {"until": until, "detail": reason})
                                              for ref in self._stopping(target)])
        return until

    async def paused(self, target: str, reason: str) -> None:
        await self._note(target, "paused", [(ref, {"detail": reason})
                                            for ref in self._stopping(target)])


def _problem(entry: Quarantined) -> str:
    where = f" ({entry.field})" if entry.field else ""
    return f"{entry.error_type}{where}: {entry.message}"


def _why_unchanged(listing: DesiredListing, want: str | None, accepted: Accepted | None) -> str:
    if accepted is not None and accepted.digest == want:
        return "the target holds this content already"
    if listing.deleted and accepted is None:
        return "deleted, and never sent to this target"
    return "nothing to send to this target"
