"""Writes a per-listing target takes ahead of their group's flush (issue 30).

A busy group is flushed ``max_wait_ms`` after its first change (10 s by default), and a group's
first flush after a quiet spell comes no sooner: until then a per-listing portal (Rentix) gets
nothing, although each of its writes carries one listing, by external ID, and the outbox
already coalesces them by listing. The debounce is what a group sync needs (one call with the
group's whole state); a per-listing target needs it only where the guards judge the change. So
while its sender drains the outbox (``sender.py``: each time it takes writes, at most once a
second), it also takes the listings that changed in groups still waiting for their flush
(``lb:due``; ``lb:dirty`` past what the target has settled), planned as the flush would plan
them (``planning.plan_listings``: the same mapping, validation, quarantine and intents). Only
busy groups: those whose changes waiting have kept coming for longer than the debounce window
(``lb:pending``'s first and last). A quiet group's flush comes a window after its last change,
with a single PUT: a bulk ahead of it would spend the bulk budget on one listing.

Only what no guard judges goes ahead: a create or an update of a live listing that removes
nothing from the portal. A deletion, a hide, unreadable state or refused content waits for the
flush, as before. Nothing goes ahead while a flush holds the group, while the target adopts
hand-made listings (a create may have to wait for its link), or while Redis may have lost state
and the group has not been checked against the portal since. One script (``ahead.lua``) puts
each write in the outbox with its intent, only if the listing's desired state is still the one
planned from and nothing of it waits in the outbox or in a PUT already.

A create that lands before the flush that judges the same change would enlarge the group the
guards measure that change's deletions against (a snapshot that replaces a group would read as
replacing half of it). So each write taken ahead is recorded in ``lb:ahead:{target}:{group}``,
a create marked so, and the group's flush counts those creates as creates of its change, not
as listings the group held (``per_listing.py``); the flush whose turn settles cleanly forgets
them. The record's seq also keeps the same change from being planned again at every take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import orjson
from redis.asyncio import Redis

from bridge import constants as k
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.claims import WRITE_NAMES, stamp
from bridge.delivery.desired import DesiredListing, read_listings
from bridge.delivery.fresh import live_in
from bridge.delivery.ledger import Ledger
from bridge.delivery.outbox import Queued, lane_key, place
from bridge.delivery.planning import ListingWrite, plan_listings, removes
from bridge.portals import RentixAdapter
from bridge.replies import maybe_text, text
from bridge.scripts import Script, load
from bridge.settings import RentixTarget

CREATE = ":c"  # after a record's seq: a create (ahead.lua marks it, the flush counts it)
AHEAD = load(__file__, "ahead.lua", {**WRITE_NAMES, "CREATE": CREATE})  # runs writes.lua's "queue"

# The groups waiting for their flush looked at per take, the soonest due first, and the most
# writes taken ahead at once: a take costs a few round trips and plans at most this many.
MAX_GROUPS = 200
MAX_WRITES = 500


def ahead_key(target: str, group: str) -> str:
    return f"{ks().AHEAD}{target}:{group}"


def early_creates(record: dict[bytes, bytes] | dict[str, str]) -> set[str]:
    """The refs a group's lb:ahead record marks as created ahead of its flush."""
    return {text(ref) for ref, value in record.items() if text(value).endswith(CREATE)}


@dataclass(frozen=True)
class Taken:
    """A write taken ahead of its group's flush."""

    write: ListingWrite
    group: str
    create: bool
    place: int  # its place in the group's lane: when its change came (outbox.place)


@dataclass(frozen=True)
class _Waiting:
    """What the target has to catch up on in groups waiting for their flush."""

    seq: dict[str, int]  # ref -> the seq of its latest change
    group: dict[str, str]  # ref -> the group it changed in


class Ahead:
    """Takes changed listings of groups waiting for their flush into a target's outbox."""

    def __init__(self, redis: Redis, ledger: Ledger, window_ms: int) -> None:
        self.redis = redis
        self.ledger = ledger
        self.window_ms = window_ms
        self._script = Script(redis, AHEAD)

    async def __call__(self, spec: RentixTarget, token: str, adapter: RentixAdapter
                       ) -> list[Taken] | None:
        """Take what may go ahead; None when the sender holds the target no more."""
        if spec.adopt and not await self.redis.exists(ks().ADOPTED + spec.name):
            return []  # adopting: a create may have to wait for its link
        waiting = await self._waiting(spec.name)
        if not waiting.seq:
            return []
        planned = await self._plan(spec.name, adapter, waiting)
        if not planned:
            return []
        return await self._take(spec.name, token, planned, waiting)

    async def _waiting(self, target: str) -> _Waiting:
        """The listings changed past what ``target`` settled, in groups waiting for their
        flush that no flush holds now and whose ledger may be trusted, not taken ahead yet."""
        groups = [text(g) for g in await self.redis.zrange(ks().DUE, 0, MAX_GROUPS - 1)]
        if not groups:
            return _Waiting({}, {})
        async with self.redis.pipeline(transaction=False) as pipe:  # one slot, no MULTI
            pipe.hget(ks().WITNESS, "cause")
            pipe.get(ks().EPOCH)
            pipe.hmget(ks().VERIFIED + target, groups)
            for group in groups:
                pipe.hmget(ks().PENDING + group, ["first", "last"])
                pipe.exists(ks().LEASE + group)
                pipe.hgetall(ks().DIRTY + group)
                pipe.hget(ks().SETTLED + group, target)
                pipe.hgetall(ahead_key(target, group))
            rows = await pipe.execute()
        lost = maybe_text(rows[0]) == "lost"
        epoch, verified = maybe_text(rows[1]), [maybe_text(v) for v in rows[2]]
        seq: dict[str, int] = {}
        where: dict[str, str] = {}
        for n, group in enumerate(groups):
            (first, last), leased, dirty, settled, record = rows[3 + 5 * n: 8 + 5 * n]
            # A quiet group's flush comes a window after its last change: only a busy one's,
            # whose changes kept coming for longer than a window, is worth going ahead of (its
            # flush may be max_wait_ms off).
            if first is None or last is None or int(last) - int(first) < self.window_ms:
                continue
            if leased or (lost and verified[n] != epoch):
                continue
            floor = int(settled or 0)
            pulled = {text(ref): int(text(v).split(":")[0]) for ref, v in record.items()}
            for raw, value in dirty.items():
                ref, changed = text(raw), int(value)
                if changed > floor and changed > pulled.get(ref, 0) and ref not in seq:
                    seq[ref], where[ref] = changed, group
            if len(seq) >= MAX_WRITES:
                break
        return _Waiting(seq, where)

    async def _plan(self, target: str, adapter: RentixAdapter, waiting: _Waiting
                    ) -> list[tuple[Taken, DesiredListing]]:
        """What the flush would write for these listings, where no guard judges it and
        nothing of the listing waits in the outbox or a PUT already."""
        refs = list(waiting.seq)[:MAX_WRITES]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(ks().OUTBOX + target, refs)
            pipe.hmget(ks().OUTBOX_PUTS + target, refs)
            box, puts = await pipe.execute()
        refs = [ref for ref, a, b in zip(refs, box, puts, strict=True) if a is None and b is None]
        listings = await read_listings(self.redis, refs)
        live = [listing for ref, listing in listings.items()
                if live_in(listing, waiting.group[ref])]
        if not live:
            return []
        refs = [listing.ref for listing in live]
        accepted = await self.ledger.accepted(target, None, refs)
        plan = plan_listings(target, adapter, live, accepted,
                             await self.ledger.quarantined(target, refs),
                             await self.ledger.intents(target, refs))
        by_ref = {listing.ref: listing for listing in live}
        now = now_ms()
        return [(Taken(write, by_ref[write.ref].group, write.ref not in accepted,
                       place(write, now)),
                 by_ref[write.ref])
                for write in plan.writes
                if write.operation == "upsert"
                and not removes(write, by_ref[write.ref], write.ref in accepted)]

    async def _take(self, target: str, token: str,
                    planned: Sequence[tuple[Taken, DesiredListing]], waiting: _Waiting
                    ) -> list[Taken] | None:
        now = now_ms()
        groups = list(dict.fromkeys(taken.group for taken, _ in planned))
        base = 8  # KEYS[8]: the first group's lease (see ahead.lua)
        index = {group: base + 3 * n for n, group in enumerate(groups)}
        keys = [ks().SENDER + target, ks().OUTBOX + target, ks().OUTBOX_READY + target,
                ks().SENDERS, ks().OUTBOX_GROUPS + target, ks().INTENT + target,
                ks().OUTBOX_PUTS + target]
        for group in groups:
            keys += [ks().LEASE + group, lane_key(target, group), ahead_key(target, group)]
        args = []
        for taken, listing in planned:
            write = taken.write
            keys.append(ks().LISTING + write.ref)
            args.append({
                "ref": write.ref, "group": index[taken.group], "listing": len(keys),
                "stamp": list(stamp(listing)), "seq": waiting.seq[write.ref],
                "create": int(taken.create),
                # In its group's lane, after the listings written since it was.
                "place": taken.place,
                "entry": Queued.of(write, taken.group, now, stamp(listing)).json(),
                "intent": orjson.dumps(asdict(write.intent)).decode()})
        done = await self._script(keys=keys, args=[token, target, now, k.GROUP_IDLE_MS,
                                                   orjson.dumps(args)])
        if not isinstance(done, list):
            return None
        took = {text(ref) for ref in done}
        return [taken for taken, _ in planned if taken.write.ref in took]

