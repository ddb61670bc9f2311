"""Newer content for the writes the sender takes from a per-listing target's outbox.

A write waits in the outbox with the content its group's flush planned, and a busy group
flushes only every ``max_wait_ms``: by the time the sender takes it, the listing may have
changed again, and the portal would get content up to a debounce (plus the outbox's wait)
old, then wait a whole pass over the budgets for the next write. So as the sender takes a
write for a bulk or a PUT, it plans the listing again from its desired state now, as the
group's next flush would (``planning.plan_listings``: the same mapping, validation,
quarantine and intents), and sends that instead (issue 30).

Only what no guard judges is replaced: an update of a live listing still in the same group,
planned as an update that removes nothing from the portal. A deletion, a hide, a move to
another group, a listing that cannot be read, content the target refused before, or a write
already sent once (it keeps its key for every retry) stays as the flush put it, and goes, or
waits for the flush, as before. The newer write is a new intent with a new key, recorded with
the entry in one script (``outbox_refresh.lua``) that replaces only the very write taken: a
write a flush replaced meanwhile is not touched (and goes as taken, as before), nor one whose
group a flush holds at that moment (it may have read the listing before the newer content
came: its write, landing after, would put the older content back in the outbox). A flush that
claims the group later reads a desired state at least as new. The group's next flush then finds
the target holding (or about to hold) its desired content and sends nothing more.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import orjson
from redis.asyncio import Redis

from bridge.constants import ks
from bridge.delivery.claims import stamp
from bridge.delivery.desired import DesiredListing, read_listings
from bridge.delivery.idempotency import Intent
from bridge.delivery.ledger import Ledger
from bridge.delivery.outbox import PutRecord, Queued
from bridge.delivery.planning import ListingWrite, plan_listings, removes
from bridge.portals import RentixAdapter
from bridge.scripts import Script, load

REFRESH = load(__file__, "outbox_refresh.lua")


class Freshener:
    """Replaces taken writes with their listings' newer content, where no guard judges it."""

    def __init__(self, redis: Redis, ledger: Ledger) -> None:
        self.redis = redis
        self.ledger = ledger
        self._script = Script(redis, REFRESH)

    async def __call__(self, target: str, token: str, adapter: RentixAdapter,
                       taken: Sequence[Queued], put_at: int | None = None
                       ) -> list[Queued] | None:
        """``taken`` with each write that may be replaced replaced (same order); ``put_at``:
        they were taken for PUTs at that moment (their records are replaced too). None when
        the sender holds the target no more."""
        candidates = [op for op in taken if _may_refresh(op)]
        if not candidates:
            return list(taken)
        newer = await self._plan(target, adapter, candidates)
        if not newer:
            return list(taken)
        groups = list(dict.fromkeys(old.group for old, _, _ in newer.values()))
        lease = {group: 5 + n for n, group in enumerate(groups)}  # its index in KEYS (1-based)
        args = [{"ref": old.ref, "key": old.key, "digest": old.digest,
                 "entry": dataclasses.replace(new, lane=None).json(),
                 "intent": orjson.dumps(dataclasses.asdict(intent)).decode(),
                 "lease": lease[old.group],
                 **({"put": PutRecord(new, put_at).json()} if put_at is not None else {})}
                for old, new, intent in newer.values()]
        done = await self._script(
            keys=[ks().SENDER + target, ks().OUTBOX + target, ks().INTENT + target,
                  ks().OUTBOX_PUTS + target, *[ks().LEASE + group for group in groups]],
            args=[token, orjson.dumps(args)])
        if not isinstance(done, list):
            return None
        replaced = {ref.decode() if isinstance(ref, bytes) else ref for ref in done}
        return [newer[op.ref][1] if op.ref in replaced and op.ref in newer else op
                for op in taken]

    async def _plan(self, target: str, adapter: RentixAdapter, ops: list[Queued]
                    ) -> dict[str, tuple[Queued, Queued, Intent]]:
        """By ref: the write taken, its newer replacement and that one's intent, for each of
        ``ops`` whose listing moved on, where it may be replaced."""
        refs = [op.ref for op in ops]
        listings = await read_listings(self.redis, refs)
        moved = [op for op in ops if (listing := listings.get(op.ref)) is not None
                 and stamp(listing) != op.stamp and live_in(listing, op.group)]
        if not moved:
            return {}
        refs = [op.ref for op in moved]
        accepted = await self.ledger.accepted(target, None, refs)
        plan = plan_listings(target, adapter, [listings[ref] for ref in refs], accepted,
                             await self.ledger.quarantined(target, refs),
                             await self.ledger.intents(target, refs))
        writes = {write.ref: write for write in plan.writes}
        out: dict[str, tuple[Queued, Queued, Intent]] = {}
        for op in moved:
            write, listing = writes.get(op.ref), listings[op.ref]
            if write is None or not _plain_update(write, listing, op.ref in accepted):
                continue
            out[op.ref] = (op, _replacing(op, write, listing), write.intent)
        return out


def _may_refresh(op: Queued) -> bool:
    """A never-sent update planned from a known desired state."""
    return op.operation == "upsert" and op.attempts == 0 and op.stamp is not None


def live_in(listing: DesiredListing, group: str) -> bool:
    return (listing.group == group and not listing.deleted and listing.body is not None
            and listing.unreadable is None)


def _plain_update(write: ListingWrite, listing: DesiredListing, on_portal: bool) -> bool:
    """An update that removes nothing from the portal: nothing for the guards to judge."""
    return write.operation == "upsert" and write.new_intent \
        and not removes(write, listing, on_portal)


def _replacing(op: Queued, write: ListingWrite, listing: DesiredListing) -> Queued:
    """``write`` in ``op``'s place: its lane, its time in the outbox, the newer stamp."""
    return dataclasses.replace(op, payload=write.payload, digest=write.digest, base=write.base,
                               key=write.key, received_ms=write.received_ms,
                               stamp=stamp(listing))
