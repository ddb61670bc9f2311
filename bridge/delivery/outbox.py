"""A per-listing target's outbox: ready writes from every group, waiting to go out by bulk.

The per-group debounce decides when a listing's change is ready; a group's flush then puts the
writes it would send in the target's outbox (``lb:outbox:{target}``, one entry per listing,
always its newest content) when more are waiting than single PUTs would send within
``bulk_after_s`` (``RentixTarget.bulk_threshold``), or when the listing already waits there (so
a later single PUT never overtakes an older bulk operation). One sender per target
(``bridge/delivery/sender.py``) drains it in requests of at most 100 operations, from any
groups, within the target's budgets.

Every change to the outbox is atomic: a flush puts entries through its group's fence, the
sender takes a batch and settles its answer through its own. An entry leaves only when the
target's answer for that very content (digest and intent key) is recorded, so an entry replaced
by newer content while its batch was in flight stays and goes in a later batch.

The bulk request in flight is recorded (``lb:outbox:batch:{target}``) before it goes out, with
an Idempotency-Key derived from its operations (each operation's intent key and attempt) and
the moment it was composed: a timeout or a crash resends exactly that request with that key, so
the portal applies it once, while any other request gets another key.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson
from redis.asyncio import Redis

from bridge import constants as k
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.claims import (
    WRITE_NAMES,
    Command,
    Keys,
    Stamp,
    Write,
    declare_groups,
    group_prefixes,
    with_declared,
)
from bridge.delivery.planning import ListingWrite, Operation
from bridge.replies import text
from bridge.scripts import Script, load

BULK_MAX_OPS = 100  # the documented maximum per request
# Rentix refuses bodies over 512 KiB with a 413: a batch stops short of that.
BULK_MAX_BYTES = 448 * 1024


@dataclass(frozen=True)
class Queued:
    """One listing's write waiting in the outbox."""

    ref: str
    group: str
    operation: Operation
    payload: dict[str, Any]
    digest: str
    base: str
    key: str  # the intent's key (lb:intent:{target}); a bulk's key is derived from these
    received_ms: int
    queued_at: int
    attempts: int = 0
    # The stamp of the desired state it was planned from (claims.stamp); None in entries
    # queued before stamps were kept: their acceptance replans the listing.
    stamp: Stamp | None = None
    # The group whose lane (lb:outbox:ready:{target}:{group}) it was taken from: set on the
    # operations of a bulk or a PUT the sender took, None in the outbox itself (and in
    # entries queued before lanes were kept: those are taken from lb:outbox:ready alone).
    lane: str | None = None

    def __post_init__(self) -> None:
        if self.stamp is not None:  # JSON gives a list back
            object.__setattr__(self, "stamp", tuple(self.stamp))

    @classmethod
    def of(cls, write: ListingWrite, group: str, now: int, planned: Stamp | None = None
           ) -> Queued:
        return cls(write.ref, group, write.operation, write.payload, write.digest, write.base,
                   write.key, write.received_ms, now, stamp=planned)

    def bulk_op(self) -> dict[str, Any]:
        """The operation as a bulk request carries it (a delete payload is one already)."""
        if self.operation == "delete":
            return {"op": "delete", "externalId": self.ref}
        return {"op": "upsert", **self.payload}

    def json(self) -> str:
        data = asdict(self)
        if data["lane"] is None:
            del data["lane"]
        return orjson.dumps(data).decode()

    def retried(self, attempts: int) -> Queued:
        """The entry as it waits again (in the outbox: no lane)."""
        return replace(self, attempts=attempts, lane=None)


@dataclass(frozen=True)
class Batch:
    """A bulk request: recorded before it is sent, resent as it is until it is answered."""

    key: str
    ops: list[Queued]
    at: int
    attempts: int = 0

    def body(self) -> list[dict[str, Any]]:
        return [op.bulk_op() for op in self.ops]

    def json(self) -> str:
        return orjson.dumps({"key": self.key, "ops": [orjson.loads(o.json()) for o in self.ops],
                             "at": self.at, "attempts": self.attempts}).decode()

    @classmethod
    def load(cls, raw: bytes | str) -> Batch:
        data = orjson.loads(raw)
        return cls(data["key"], [Queued(**o) for o in data["ops"]], int(data["at"]),
                   int(data.get("attempts") or 0))


def batch_key(ops: list[Queued], composed_at: int) -> str:
    """The Idempotency-Key of a bulk of these operations, composed at ``composed_at``: derived
    from each operation's intent key and attempt, and the moment the batch was made, so a
    later batch of the same intents (after a per-operation retry, say) gets another."""
    text = "\n".join([str(composed_at), *(f"{op.ref}\t{op.key}\t{op.attempts}" for op in ops)])
    return "lb-bulk-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def compose(ready: list[Queued], now: int, max_ops: int = BULK_MAX_OPS,
            max_bytes: int = BULK_MAX_BYTES) -> Batch | None:
    """The next bulk: the ready writes in the order given (``Take``: round-robin across
    groups, oldest first in each), up to ``max_ops`` and ``max_bytes``."""
    ops: list[Queued] = []
    size = len(b'{"operations":[]}')
    for entry in ready:
        cost = len(orjson.dumps(entry.bulk_op())) + 1
        if ops and (len(ops) >= max_ops or size + cost > max_bytes):
            break
        ops.append(entry)
        size += cost
    return Batch(batch_key(ops, now), ops, now) if ops else None


def lane_key(target: str, group: str) -> str:
    """A group's lane in a target's outbox: lb:outbox:ready:{target}:{group}."""
    return f"{ks().OUTBOX_READY}{target}:{group}"


def place(write: ListingWrite, now: int) -> int:
    """Where a write joins its group's lane (ms; the lane goes oldest first): when the change
    it carries came. A listing that changed early goes before one that changed later, whenever
    each was last written: a pass over the group's listings then spends the budget on listings
    in the order the portal began to lack them, so each waits the queue, not the queue plus
    the quiet time before its change (a listing placed at its last write keeps its turn while
    it has nothing to send; measured in docs/performance.md). ``now`` when the change's
    arrival is not known (0: a state stored before it was kept)."""
    return write.received_ms if write.received_ms > 0 else now


def put_writes(target: str, entries: list[Queued], now: int,
               places: dict[str, int] | None = None) -> list[Write]:
    """Put writes in the outbox (replacing older content of the same listings, which keep
    their place), ready now, each new listing in its group's lane, and make the target's
    sender due: the named write "queue", one per group. ``places``: where a listing joins its
    group's lane, if not at ``now`` (``place``: when its change came)."""
    by_group: dict[str, list[Queued]] = {}
    for entry in entries:
        by_group.setdefault(entry.group, []).append(entry)
    places = places or {}
    return [Write("queue", (ks().OUTBOX + target, ks().OUTBOX_READY + target, ks().SENDERS,
                            lane_key(target, group), ks().OUTBOX_GROUPS + target),
                  (target, str(now),
                   orjson.dumps({e.ref: places[e.ref] for e in some if e.ref in places}
                                ).decode(),
                   *[x for e in some for x in (e.ref, e.json())]))
            for group, some in by_group.items()]


def put_commands(target: str, entries: list[Queued], now: int) -> list[Command]:
    """``put_writes`` as Redis commands, for tests that fill an outbox directly (tests/ops,
    tests/cli) with new listings; the bridge itself writes through ``put_writes``."""
    if not entries:
        return []
    groups = dict.fromkeys(e.group for e in entries)
    return [
        ("HSET", ks().OUTBOX + target, *[x for e in entries for x in (e.ref, e.json())]),
        ("ZADD", ks().OUTBOX_READY + target, "NX",
         *[x for e in entries for x in (str(now), e.ref)]),
        *[("ZADD", lane_key(target, g), "NX",
           *[x for e in entries if e.group == g for x in (str(now), e.ref)]) for g in groups],
        ("ZADD", ks().OUTBOX_GROUPS + target, "NX", *[x for g in groups for x in (str(now), g)]),
        ("ZADD", ks().SENDERS, "LT", str(now), target),
    ]


# Take writes for a bulk or for single PUTs, round-robin across the groups' lanes (take.lua).
TAKE = load(__file__, "outbox_take.lua")
# At most this many groups' lanes are read per take (the ones served longest ago).
TAKE_GROUPS = 200


@dataclass(frozen=True)
class PutRecord:
    """A write the sender took for a single PUT: recorded before it goes out, resent by PUT
    with the same key (its intent key) until it is answered."""

    op: Queued
    at: int
    attempts: int = 0
    not_before: int = 0

    def json(self) -> str:
        return orjson.dumps({"lane": self.op.lane or "", "at": self.at,
                             "attempts": self.attempts, "not_before": self.not_before,
                             "op": orjson.loads(self.op.json())}).decode()

    @classmethod
    def load(cls, raw: bytes | str) -> PutRecord:
        data = orjson.loads(raw)
        op = Queued(**{**data["op"], "lane": data.get("lane") or None})
        return cls(op, int(data["at"]), int(data.get("attempts") or 0),
                   int(data.get("not_before") or 0))


class Take:
    """outbox_take.lua over one client: the next writes to send, fairly chosen: round-robin
    across the groups' lanes (the group served longest ago first), oldest first in each, then
    any entries queued before lanes were kept; only while the sender holds the target. For
    PUTs (``put=True``) they are recorded in ``lb:outbox:puts:{target}`` and leave their
    lanes, atomically."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._script = Script(redis, TAKE)

    async def __call__(self, target: str, token: str, now: int, limit: int = BULK_MAX_OPS, *,
                       put: bool = False, exclude: Sequence[str] = ()) -> list[Queued] | None:
        """None when the sender holds the target no more."""
        groups = [text(g) for g in await self.redis.zrange(ks().OUTBOX_GROUPS + target, 0,
                                                           TAKE_GROUPS - 1)]
        answer = await self._script(
            keys=[ks().SENDER + target, ks().OUTBOX + target, ks().OUTBOX_READY + target,
                  ks().OUTBOX_GROUPS + target, ks().OUTBOX_PUTS + target,
                  *[lane_key(target, g) for g in groups]],
            args=[token, now, limit, "put" if put else "bulk", orjson.dumps(list(exclude))])
        if not isinstance(answer, list):
            return None
        out = []
        for i in range(0, len(answer), 3):
            lane = text(answer[i]) or None
            out.append(Queued(**{**orjson.loads(answer[i + 2]), "lane": lane}))
        return out


# Settle a bulk's answer, if this sender still holds the target (settle.lua).
SETTLE = load(__file__, "settle.lua", WRITE_NAMES)


class Settle:
    """settle.lua over one client: a bulk's answer per operation, with further named writes
    (history, figures, stories), only while the sender holds the target."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._script = Script(redis, SETTLE)

    async def __call__(self, target: str, token: str, ops: Sequence[dict[str, Any]],
                       writes: Sequence[Write], put: bool = False) -> bool:
        """``ops``: per operation {kind, ref, ...} (``sender.Settled.arg``); ``put``: the
        answer of a single PUT the sender took (its record goes), else of the bulk in flight.
        False when the sender holds the target no more (nothing written)."""
        keys = Keys(ks().SENDER + target, ks().OUTBOX + target, ks().OUTBOX_READY + target,
                    ks().INTENT + target, ks().ACCEPTED + target, ks().QUARANTINE + target,
                    ks().OUTBOX_BATCH + target, ks().DUE, ks().OUTBOX_GROUPS + target,
                    ks().OUTBOX_PUTS + target)
        payload = keys.writes(writes)
        listed = [{**op, "listing": keys.index(ks().LISTING + op["ref"]),
                   **({"lane_key": keys.index(lane_key(target, op["lane"]))}
                      if op.get("lane") else {})} for op in ops]
        accepting = [ks().LISTING + op["ref"] for op in ops if op["kind"] == "accepted"]
        answer = await with_declared(
            lambda more: self._script(keys=keys.with_more(more), args=[
                token, now_ms(), k.GROUP_IDLE_MS, group_prefixes(), orjson.dumps(listed),
                payload, "put" if put else "bulk"]),
            lambda: declare_groups(self.redis, accepting))
        return bool(int(answer))


class Outbox:
    """Reads of the outbox; writes go through a fence (the flush's or the sender's)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def waiting(self, target: str, refs: list[str]) -> set[str]:
        """Which of ``refs`` have a write in the outbox (in flight or not)."""
        if not refs:
            return set()
        values = await self.redis.hmget(ks().OUTBOX + target, refs)  # type: ignore[misc]
        return {ref for ref, value in zip(refs, values, strict=True) if value is not None}

    async def depth(self, target: str) -> int:
        return int(await self.redis.hlen(ks().OUTBOX + target))  # type: ignore[misc]

    async def ready(self, target: str, now: int, limit: int = BULK_MAX_OPS) -> list[Queued]:
        """The writes that may go now, longest waiting first."""
        return await self._load(target, await self.redis.zrangebyscore(
            ks().OUTBOX_READY + target, "-inf", now, start=0, num=limit))

    async def next_ready(self, target: str) -> int | None:
        """When the earliest write in the outbox may go; None when it is empty."""
        first = await self.redis.zrange(ks().OUTBOX_READY + target, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def in_flight(self, target: str) -> Batch | None:
        raw = await self.redis.get(ks().OUTBOX_BATCH + target)
        return Batch.load(raw) if raw else None

    async def puts(self, target: str) -> list[PutRecord]:
        """The writes taken for single PUTs and not answered yet, oldest first."""
        raw = await self.redis.hvals(ks().OUTBOX_PUTS + target)  # type: ignore[misc]
        return sorted((PutRecord.load(v) for v in raw), key=lambda r: (r.at, r.op.ref))

    async def entries(self, target: str, limit: int = 100) -> list[Queued]:
        """The first ``limit`` writes in the outbox, longest waiting first (for operators; the
        sender takes them round-robin across groups)."""
        return await self._load(target, await self.redis.zrange(ks().OUTBOX_READY + target, 0,
                                                                limit - 1))

    async def _load(self, target: str, refs: list[bytes]) -> list[Queued]:
        """The outbox entries of ``refs``, in that order (one gone meanwhile is left out)."""
        if not refs:
            return []
        values = await self.redis.hmget(ks().OUTBOX + target, refs)  # type: ignore[misc]
        return [Queued(**orjson.loads(v)) for v in values if v is not None]


def drain_seconds(depth: int, bulk_per_minute: int, spent_until_ms: int | None,
                  now: int) -> float | None:
    """How long ``depth`` writes take at ``bulk_per_minute`` bulks of 100, after the reported
    window resets if the portal said it is spent."""
    if bulk_per_minute <= 0:
        return None
    if depth <= 0:
        return 0.0
    wait = max(0, (spent_until_ms or now) - now) / 1000
    return wait + math.ceil(depth / BULK_MAX_OPS) * 60 / bulk_per_minute
