"""The inbox: events the webhook stored and the workers have not folded into the state yet.

The webhook only dedupes an event and appends it to ``lb:inbox``, so its answer waits for one
short script (``bridge/ingest/store.py``). Every worker's scheduler folds the inbox, oldest first,
before it takes the due groups (``workers/scheduler.py``): ordering, deletions, the debounce
marks, the listings' stories and the counters are the fold's, exactly as the webhook's script
did them before, with the time each event was received. A folded change is scheduled in the
same tick, so the fold adds no delay of its own to delivery.

One script call (``fold.lua``) folds a batch and removes it from the inbox, reading only the
entries it folds (a snapshot may be a megabyte), and runs even on a Redis past its maxmemory
(``allow-oom``): a worker killed or frozen mid-fold folded nothing, Redis's AOF holds the batch's
effects whole or not at all, and two workers never fold the same event (their calls run one after
the other, each on what the other left).

Every key the fold touches is passed in KEYS, named in Python from ``bridge/constants.py``;
which ones depends on the data, so they are read first (``fold_head.lua``: the entries the call
will take and the tombstones due; then ``fold_state.lua``: each listing's group and each
snapshot's members, in one call). The script checks, before each entry, that every key it will
touch was named, and stops there if not (another worker folded the head meanwhile, a listing
moved): what it folded stays folded, and the caller reads again and calls again, a few times at
most.

The same call removes compacted tombstones that no event still waiting (or being stored) was
received before the expiry of (``lb:tombstones``): every tick calls it at least once, an empty
inbox too, so tombstones go on time when nothing arrives.

An entry the fold cannot handle (a shape it cannot read, an error of Redis's own) goes aside to
``lb:inbox:dead`` with the error, in the same call, and the fold goes on with the rest: one
poison event never holds up the inbox or any other group. ``DeadLetters`` lists them, and
retries (back to the inbox's head) or discards them for an operator (``bridge inbox dead``,
``/api/inbox/dead``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson
import redis
from redis.asyncio import Redis

from bridge import constants as k
from bridge import counters, group_state
from bridge.constants import ks
from bridge.ingest.store import DUPLICATE
from bridge.scripts import Script, load
from bridge.settings import RetentionSettings, Settings

log = logging.getLogger("bridge.ingest.inbox")

# One fold call takes at most this many events, and stops taking more once they name this
# many listings (a snapshot of a large group is folded alone): each call blocks Redis while
# it runs, ~50 µs per listing.
MAX_EVENTS = 100
MAX_LISTINGS = 1_000
# A scheduler tick folds for at most this long before it takes the due groups: a backlog (the
# workers were away) never holds back the flushes of what is already folded.
DRAIN_S = 0.5


# fold_head.lua names the tombstones due this far ahead of Redis's clock: the fold's purge, a
# little later, finds no more due than it was told of (one it was not waits for the next call).
PURGE_AHEAD_MS = 1_000
# One fold call removes at most this many expired tombstones (~5 µs each).
PURGE_TOMBSTONES = 200
# A fold that stops for keys it was not given is read for and called again at most this often
# (each time either it folds, or another worker folded meanwhile); the next tick goes on.
FOLD_TRIES = 4

HEAD = load(__file__, "fold_head.lua", {
    "DUPLICATE": DUPLICATE.decode(), "GRACE": k.TOMBSTONE_GRACE_MS, "AHEAD": PURGE_AHEAD_MS,
    "PURGE": PURGE_TOMBSTONES,
})
STATE = load(__file__, "fold_state.lua", {"G": k.LISTING_FIELDS[0]})
FOLD = load(__file__, "fold.lua", {
    "DUPLICATE": DUPLICATE.decode(), "STATS_TTL": k.STATS_TTL_S, "IDLE": k.GROUP_IDLE_MS,
    "TRACE_MAXLEN": k.TRACE_MAXLEN, "GRACE": k.TOMBSTONE_GRACE_MS, "PURGE": PURGE_TOMBSTONES,
    **dict(zip(("G", "V", "T", "D", "AT", "CAUSE", "FLOOR"),
               (k.LISTING_FIELDS[i] for i in (0, 1, 2, 3, 5, 6, 7)), strict=True)),
    "SOURCES": k.LISTING_SOURCES, "CAUSE_DELETED": k.CAUSE_DELETED,
    "CAUSE_SNAPSHOT": k.CAUSE_SNAPSHOT,
    "EVENT_ACCEPTED": counters.WEBHOOK_EVENTS.field("accepted"),
    "EVENT_STALE": counters.WEBHOOK_EVENTS.field("stale"),
})
# fold.lua's fixed KEYS, and the prefixes (ARGV[7...]) it builds the other names from.
_FIXED = 7  # how many of fold.lua's KEYS are fixed


def _fixed_keys() -> tuple[str, ...]:
    keys = ks()
    return (keys.INBOX, keys.DUE, keys.GROUPS, keys.METRICS, keys.TOMBSTONES, keys.INBOX_DEAD,
            keys.INBOX_RETRIES)


def _prefixes() -> tuple[str, ...]:
    keys = ks()
    return (keys.LISTING, keys.BODY, keys.TRACE, keys.STATS, keys.MEMBERS, keys.PENDING,
            keys.DIRTY, keys.SETTLED)
_GROUP = k.LISTING_FIELDS[0]
_REDELIVERY = DUPLICATE.decode()


@dataclass(frozen=True)
class Folded:
    events: int  # folded by this call
    applied: int  # listing changes they made (stale and out-of-horizon ones make none)
    left: int  # events still in the inbox
    set_aside: tuple[str, ...] = ()  # why each entry set aside (lb:inbox:dead) failed


@dataclass(frozen=True)
class FoldSettings:
    """The settings fold.lua takes in ARGV."""

    window_ms: int
    max_wait_ms: int
    horizon_ms: int
    trace_ttl_ms: int

    @classmethod
    def of(cls, settings: Settings, retention: RetentionSettings | None = None
           ) -> FoldSettings:
        retention = retention or settings.retention
        return cls(settings.debounce.window_ms, settings.debounce.max_wait_ms,
                   retention.horizon_ms, settings.trace.retention_ms)


@dataclass
class _Batch:
    """What the head says the next fold call will need: the keys known from the entries
    alone, and the listings and snapshot groups whose state names more."""

    keys: dict[str, None] = field(default_factory=lambda: dict.fromkeys(_fixed_keys()))
    refs: dict[str, None] = field(default_factory=dict)  # listings whose group is read
    snapshots: dict[str, None] = field(default_factory=dict)  # groups whose members are read
    entries: int = 0

    def group(self, g: str) -> None:
        for prefix in (ks().MEMBERS, ks().PENDING, ks().DIRTY, ks().SETTLED):
            self.keys[prefix + g] = None

    def listing(self, ref: str) -> None:
        for prefix in (ks().LISTING, ks().BODY, ks().TRACE):
            self.keys[prefix + ref] = None


def _batch(head: list[Any]) -> _Batch:
    """fold_head.lua's reply: the tombstones due, then the names in each entry the call will
    take. An entry that does not read names no key (the fold sets it aside, touching only fixed
    keys)."""
    batch = _Batch()
    due, *entries = head
    for ref in due:
        batch.keys[ks().LISTING + _text(ref)] = None
    for told in entries:
        batch.entries += 1
        kind, *rest = (_text(name) for name in told)
        try:
            received, group, *refs = rest
            minute = int(received) // 60_000
        except ValueError:
            continue  # an entry the fold cannot read: set aside
        for ref in refs:
            batch.listing(ref)
        if kind.startswith(_REDELIVERY):
            continue  # only its listings' stories
        batch.keys[f"{ks().STATS}{minute}"] = None
        batch.group(group)
        batch.refs.update(dict.fromkeys(refs))
        if kind == "s":
            batch.snapshots[group] = None
    return batch


def _state_call(batch: _Batch) -> tuple[list[str], list[int]]:
    """fold_state.lua's KEYS and ARGV: each listing's hash, each snapshot group's members."""
    return ([ks().LISTING + ref for ref in batch.refs]
            + [ks().MEMBERS + g for g in batch.snapshots], [len(batch.refs)])


def _fold_keys(batch: _Batch, state: list[Any]) -> list[str]:
    """Every key the fold will touch, given what fold_state.lua found (a key of the wrong type
    names nothing: the fold meets it and sets its entry aside)."""
    groups, members = state[:len(batch.refs)], state[len(batch.refs):]
    for g in groups:
        if isinstance(g, (bytes, str)):
            batch.group(_text(g))
    for refs in members:
        if isinstance(refs, list):
            for ref in refs:
                batch.keys[ks().LISTING + _text(ref)] = None
                batch.keys[ks().TRACE + _text(ref)] = None
    return list(batch.keys)


def _fold_args(max_events: int, max_listings: int, settings: FoldSettings) -> list[int | str]:
    return [max_events, max_listings, settings.window_ms, settings.max_wait_ms,
            settings.horizon_ms, settings.trace_ttl_ms, *_prefixes()]


@dataclass
class _Tally:
    """What the calls of one fold did, and the budget left for the next."""

    max_events: int
    max_listings: int
    taken: int = 0  # entries taken: folded or set aside
    events: int = 0
    applied: int = 0
    left: int = 0
    aside: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def add(self, reply: list[Any]) -> None:
        folded, applied, left, listings, aside, missing = reply
        self.events += int(folded)
        self.applied += int(applied)
        self.left = int(left)
        self.aside += [_text(why) for why in aside]
        self.missing = [_text(key) for key in missing]
        self.taken += int(folded) + len(aside)
        self.max_events -= int(folded) + len(aside)
        self.max_listings -= int(listings)

    def again(self) -> bool:
        """Stopped for keys it was not given, with budget left: read again and call again."""
        return bool(self.missing) and self.max_events > 0 and (
            self.taken == 0 or self.max_listings > 0)

    def result(self) -> Folded:
        for why in self.aside:
            log.warning("an inbox entry could not be folded and was set aside (%s): %s; "
                        "see `bridge inbox dead list`", ks().INBOX_DEAD, why)
        return Folded(self.events, self.applied, self.left, tuple(self.aside))


class Inbox:
    """Folds ``lb:inbox`` into the desired state, on the workers' Redis client."""

    def __init__(self, redis: Redis, settings: Settings,
                 retention: RetentionSettings | None = None) -> None:
        self._redis = redis
        self._settings = FoldSettings.of(settings, retention)
        self._head = Script(redis, HEAD)
        self._state = Script(redis, STATE)
        self._fold = Script(redis, FOLD)

    async def fold(self, max_events: int = MAX_EVENTS,
                   max_listings: int = MAX_LISTINGS) -> Folded:
        """Fold the oldest events (one call, atomic, unless another worker changed what it
        read first); those it cannot fold go aside."""
        tally = _Tally(max_events, max_listings)
        for _ in range(FOLD_TRIES):
            batch = _batch(await self._head(keys=[ks().INBOX, ks().TOMBSTONES],
                                            args=[tally.max_events, tally.max_listings]))
            if batch.entries == 0 and len(batch.keys) == _FIXED:
                break  # nothing to fold or purge: no call
            keys, args = _state_call(batch)
            state: list[Any] = await self._state(keys=keys, args=args) if keys else []
            tally.add(await self._fold(
                keys=_fold_keys(batch, state),
                args=_fold_args(tally.max_events, tally.max_listings, self._settings)))
            if not tally.again():
                break
        return tally.result()

    async def drain(self, budget_s: float = DRAIN_S) -> int:
        """Fold until the inbox is empty or ``budget_s`` has passed; how many events. One call
        at least, however empty the inbox: it removes expired tombstones too."""
        deadline = time.monotonic() + budget_s
        total = 0
        while True:
            folded = await self.fold()
            total += folded.events
            if not folded.left or time.monotonic() >= deadline:
                return total

    async def waiting(self) -> int:
        """Events stored and not folded yet."""
        return int(await self._redis.llen(ks().INBOX))  # type: ignore[misc]



def fold_now(r: redis.Redis, settings: FoldSettings, max_events: int = MAX_EVENTS,
             max_listings: int = MAX_LISTINGS) -> Folded:
    """``Inbox.fold`` on a synchronous client (tools, tests, benchmarks)."""
    tally = _Tally(max_events, max_listings)
    head, read, fold = (r.register_script(lua.source) for lua in (HEAD, STATE, FOLD))
    for _ in range(FOLD_TRIES):
        batch = _batch(head(keys=[ks().INBOX, ks().TOMBSTONES],
                            args=[tally.max_events, tally.max_listings]))
        if batch.entries == 0 and len(batch.keys) == _FIXED:
            break
        keys, args = _state_call(batch)
        state = read(keys=keys, args=args) if keys else []
        tally.add(fold(keys=_fold_keys(batch, state),
                       args=_fold_args(tally.max_events, tally.max_listings, settings)))
        if not tally.again():
            break
    return tally.result()


# -- entries set aside (lb:inbox:dead) --

# An operator's: entries set aside go back to the inbox's head, or are dropped.
RETRY_DEAD = load(__file__, "retry_dead.lua")
DISCARD_DEAD = load(__file__, "discard_dead.lua")

_FIELDS = msgspec.msgpack.Decoder(list[str])


@dataclass(frozen=True)
class DeadEvent:
    """An inbox entry the fold set aside. What the entry says is shown as far as it reads; an
    entry that does not read has no webhook id, and ``id`` names it by its digest."""

    id: str  # the webhook id, or "sha1:" and the entry's digest when it has none
    webhook_id: str | None
    kind: str | None  # the entry's letter: c, u, d, s (None: unreadable)
    redelivery: bool
    group: str | None
    refs: list[str]
    received_at: int | None
    error: str  # why the fold could not handle it
    at: int  # when it was set aside
    attempts: int  # how many times it was set aside (retries included)


@dataclass(frozen=True)
class DeadSummary:
    count: int
    oldest_at: int | None  # when the first one still there was set aside


class DeadLetters:
    """``lb:inbox:dead`` for an operator: list, retry or discard what the fold set aside."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._retry = Script(redis, RETRY_DEAD)
        self._discard = Script(redis, DISCARD_DEAD)

    async def summary(self) -> DeadSummary:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.llen(ks().INBOX_DEAD)
            pipe.lindex(ks().INBOX_DEAD, 0)
            count, first = await pipe.execute()
        return DeadSummary(int(count), None if first is None else read_record(first)[0].at)

    async def events(self) -> list[DeadEvent]:
        """Every entry set aside, the first set aside first."""
        return [event for event, _ in await self._records()]

    async def retry(self, ids: Sequence[str] | None) -> list[DeadEvent]:
        """Put the entries named (``None``: all) back at the inbox's head, in the order they
        were set aside; the ones moved."""
        chosen = await self._chosen(ids)
        args: list[bytes | int] = [k.INBOX_RETRIES_MS]
        for event, (record, entry) in chosen:
            args += [record, entry, hashlib.sha1(entry).hexdigest().encode(), event.attempts]
        moved = await self._retry(keys=[ks().INBOX_DEAD, ks().INBOX, ks().INBOX_RETRIES], args=args)
        await group_state.wake(self._redis)
        return [event for event, _ in chosen][:int(moved)]

    async def discard(self, ids: Sequence[str] | None) -> list[DeadEvent]:
        """Drop the entries named (``None``: all) for good; the ones dropped."""
        chosen = await self._chosen(ids)
        if not chosen:
            return []
        removed = await self._discard(keys=[ks().INBOX_DEAD],
                                      args=[record for _, (record, _) in chosen])
        return [event for event, _ in chosen][:int(removed)]

    async def _records(self) -> list[tuple[DeadEvent, tuple[bytes, bytes]]]:
        raw: list[bytes] = await self._redis.lrange(ks().INBOX_DEAD, 0, -1)  # type: ignore[misc]
        return [(event, (record, entry)) for record in raw
                for event, entry in (read_record(record),)]

    async def _chosen(self, ids: Sequence[str] | None
                      ) -> list[tuple[DeadEvent, tuple[bytes, bytes]]]:
        records = await self._records()
        if ids is None:
            return records
        missing = sorted(set(ids) - {event.id for event, _ in records})
        if missing:
            raise KeyError(", ".join(missing))
        return [(event, raw) for event, raw in records if event.id in ids]


def read_record(record: bytes) -> tuple[DeadEvent, bytes]:
    """A record of lb:inbox:dead (a JSON line, then the entry): the event, and its entry."""
    line, _, entry = record.partition(b"\n")
    meta = orjson.loads(line)
    redelivery = entry[:1] == DUPLICATE
    try:
        fields = _FIELDS.decode(entry[1:] if redelivery else entry)
    except (msgspec.DecodeError, ValueError):
        fields = []
    webhook_id = fields[0] if fields else None
    return DeadEvent(
        id=webhook_id or "sha1:" + hashlib.sha1(entry).hexdigest()[:16],
        webhook_id=webhook_id,
        kind=fields[2] if len(fields) > 2 else None,
        redelivery=redelivery and bool(fields),
        group=fields[3] if len(fields) > 3 else None,
        refs=fields[5::3],
        received_at=_whole(fields[1]) if len(fields) > 1 else None,
        error=str(meta.get("error", "")),
        at=int(meta.get("at", 0)),
        attempts=int(meta.get("attempts", 1)),
    ), entry


def _whole(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
