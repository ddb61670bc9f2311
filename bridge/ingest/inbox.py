"""The inbox: events the webhook stored and the workers have not folded into the state yet.

The webhook only dedupes an event and appends it to ``lb:inbox``, so its answer waits for one
short script (``bridge/ingest/store.py``). Every worker's scheduler folds the inbox, oldest first,
before it takes the due groups (``workers/scheduler.py``): ordering, deletions, the debounce
marks, the listings' stories and the counters are the fold's, exactly as the webhook's script
did them before, with the time each event was received. A folded change is scheduled in the
same tick, so the fold adds no delay of its own to delivery.

One script call folds a batch and removes it from the inbox, reading only the entries it folds
(a snapshot may be a megabyte), and runs even on a Redis past its maxmemory (``allow-oom``): a
worker killed or frozen mid-fold folded nothing, Redis's AOF holds the batch's effects whole or
not at all, and two workers never fold the same event (their calls run one after the other,
each on what the other left).

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
from dataclasses import dataclass

import msgspec
import orjson
from redis.asyncio import Redis

from bridge import constants as k
from bridge.ingest.store import DUPLICATE, fold_script
from bridge.settings import Settings

log = logging.getLogger("bridge.ingest.inbox")

# One fold call takes at most this many events, and stops taking more once they name this
# many listings (a snapshot of a large group is folded alone): each call blocks Redis while
# it runs, ~50 µs per listing.
MAX_EVENTS = 100
MAX_LISTINGS = 1_000
# A scheduler tick folds for at most this long before it takes the due groups: a backlog (the
# workers were away) never holds back the flushes of what is already folded.
DRAIN_S = 0.5


@dataclass(frozen=True)
class Folded:
    events: int  # folded by this call
    applied: int  # listing changes they made (stale and out-of-horizon ones make none)
    left: int  # events still in the inbox
    set_aside: tuple[str, ...] = ()  # why each entry set aside (lb:inbox:dead) failed


class Inbox:
    """Folds ``lb:inbox`` into the desired state, on the workers' Redis client."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._fold = redis.register_script(fold_script(
            settings.webhook, settings.debounce, settings.trace, settings.retention))

    async def fold(self, max_events: int = MAX_EVENTS,
                   max_listings: int = MAX_LISTINGS) -> Folded:
        """Fold the oldest events (one call, atomic); those it cannot fold go aside."""
        events, applied, left, *aside = await self._fold(args=[max_events, max_listings])
        reasons = tuple(_text(why) for why in aside)
        for why in reasons:
            log.warning("an inbox entry could not be folded and was set aside (%s): %s; "
                        "see `bridge inbox dead list`", k.INBOX_DEAD, why)
        return Folded(int(events), int(applied), int(left), reasons)

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
        return int(await self._redis.llen(k.INBOX))  # type: ignore[misc]


# -- entries set aside (lb:inbox:dead) --

# Back to the inbox's head, oldest first, each only if it is still set aside (another operator
# may have acted since it was read); its failures so far kept for the fold that meets it next.
# KEYS: lb:inbox:dead, lb:inbox, lb:inbox:retries. ARGV: the retries' lifetime (ms), then per
# record: the record, its entry, the entry's sha1, its attempts. Returns how many went back.
RETRY_DEAD = """
local dead, inbox, retries = KEYS[1], KEYS[2], KEYS[3]
local moved = 0
for i = #ARGV - 3, 2, -4 do
  if redis.call('LREM', dead, 1, ARGV[i]) == 1 then
    redis.call('LPUSH', inbox, ARGV[i + 1])
    redis.call('HSET', retries, ARGV[i + 2], ARGV[i + 3])
    moved = moved + 1
  end
end
if moved > 0 then redis.call('PEXPIRE', retries, ARGV[1]) end
return moved
"""

# KEYS: lb:inbox:dead. ARGV: the records. Returns how many were still there (and are gone).
DISCARD_DEAD = """
local removed = 0
for _, record in ipairs(ARGV) do removed = removed + redis.call('LREM', KEYS[1], 1, record) end
return removed
"""

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
        self._retry = redis.register_script(RETRY_DEAD)
        self._discard = redis.register_script(DISCARD_DEAD)

    async def summary(self) -> DeadSummary:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.llen(k.INBOX_DEAD)
            pipe.lindex(k.INBOX_DEAD, 0)
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
        moved = await self._retry(keys=[k.INBOX_DEAD, k.INBOX, k.INBOX_RETRIES], args=args)
        return [event for event, _ in chosen][:int(moved)]

    async def discard(self, ids: Sequence[str] | None) -> list[DeadEvent]:
        """Drop the entries named (``None``: all) for good; the ones dropped."""
        chosen = await self._chosen(ids)
        if not chosen:
            return []
        removed = await self._discard(keys=[k.INBOX_DEAD],
                                      args=[record for _, (record, _) in chosen])
        return [event for event, _ in chosen][:int(removed)]

    async def _records(self) -> list[tuple[DeadEvent, tuple[bytes, bytes]]]:
        raw: list[bytes] = await self._redis.lrange(k.INBOX_DEAD, 0, -1)  # type: ignore[misc]
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
