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
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson
from redis.asyncio import Redis

from bridge import constants as k
from bridge.delivery.claims import ACCEPTED_LUA, ACCEPTED_NAMES, Command, Stamp
from bridge.delivery.planning import ListingWrite, Operation
from bridge.scripts import splice

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
        return orjson.dumps(asdict(self)).decode()

    def retried(self, attempts: int) -> Queued:
        return replace(self, attempts=attempts)


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
        return orjson.dumps({"key": self.key, "ops": [asdict(o) for o in self.ops],
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
    """The next bulk: the longest-waiting ready writes, up to ``max_ops`` and ``max_bytes``."""
    ops: list[Queued] = []
    size = len(b'{"operations":[]}')
    for entry in ready:
        cost = len(orjson.dumps(entry.bulk_op())) + 1
        if ops and (len(ops) >= max_ops or size + cost > max_bytes):
            break
        ops.append(entry)
        size += cost
    return Batch(batch_key(ops, now), ops, now) if ops else None


def put_commands(target: str, entries: list[Queued], now: int) -> list[Command]:
    """Put writes in the outbox (replacing older content of the same listings, which keep
    their place), ready now, and make the target's sender due."""
    if not entries:
        return []
    return [
        ("HSET", k.OUTBOX + target, *[x for e in entries for x in (e.ref, e.json())]),
        # NX: newer content of a listing already waiting keeps its place in the queue (else a
        # listing that changes more often than the outbox drains would never reach the front).
        ("ZADD", k.OUTBOX_READY + target, "NX",
         *[x for e in entries for x in (str(now), e.ref)]),
        ("ZADD", k.SENDERS, "LT", str(now), target),  # LT adds a missing member too
    ]


# Settle a bulk's answer, if this sender still holds the target. ARGV[1]: target; ARGV[2]: the
# sender's token; ARGV[3]: per operation {kind = accepted | refused | retry, ref, group,
# deletion, digest, key, record (JSON to store), at (retry), stamp (what it was planned from;
# absent in old entries)}; ARGV[4]: further commands (history, figures, stories); ARGV[5]: now.
# An outbox entry goes (or is rescheduled) only if it still holds that very write; a newer
# write of the listing stays. The operation's intent is settled if it is still the standing
# one. An accepted write whose listing moved on since it was planned marks it changed again
# (``accepted`` in claims.ACCEPTED_LUA) unless a newer write of it waits behind; an accepted
# deletion always does, so its group's next flush compacts it. Returns 1, or 0 (not held).
SETTLE = splice(ACCEPTED_LUA + """
local target, token = ARGV[1], ARGV[2]
if redis.call('GET', __SENDER__ .. target) ~= token then return 0 end
local box, ready = __OUTBOX__ .. target, __READY__ .. target
local intents = __INTENT__ .. target
for _, o in ipairs(cjson.decode(ARGV[3])) do
  local raw = redis.call('HGET', box, o.ref)
  local same = false
  if raw then
    local e = cjson.decode(raw)
    same = e.key == o.key and e.digest == o.digest
  end
  if o.kind == 'retry' then
    if same then
      redis.call('HSET', box, o.ref, o.record)
      redis.call('ZADD', ready, o.at, o.ref)
    end
  else
    if same then
      redis.call('HDEL', box, o.ref)
      redis.call('ZREM', ready, o.ref)
    end
    if o.kind == 'accepted' then
      redis.call('HSET', __ACCEPTED__ .. target, o.ref, o.record)
      redis.call('HDEL', __QUARANTINE__ .. target, o.ref)
      accepted(target, o.ref, o.key, o.stamp, tonumber(ARGV[5]), o.deletion, raw and not same)
    else
      local intent = redis.call('HGET', intents, o.ref)
      if intent and cjson.decode(intent).key == o.key then redis.call('HDEL', intents, o.ref) end
      redis.call('HSET', __QUARANTINE__ .. target, o.ref, o.record)
    end
  end
end
redis.call('DEL', __BATCH__ .. target)
for _, command in ipairs(cjson.decode(ARGV[4])) do redis.call(unpack(command)) end
return 1
""", {**ACCEPTED_NAMES, "SENDER": k.SENDER, "OUTBOX": k.OUTBOX, "READY": k.OUTBOX_READY,
      "ACCEPTED": k.ACCEPTED, "QUARANTINE": k.QUARANTINE, "BATCH": k.OUTBOX_BATCH})


class Outbox:
    """Reads of the outbox; writes go through a fence (the flush's or the sender's)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def waiting(self, target: str, refs: list[str]) -> set[str]:
        """Which of ``refs`` have a write in the outbox (in flight or not)."""
        if not refs:
            return set()
        values = await self.redis.hmget(k.OUTBOX + target, refs)  # type: ignore[misc]
        return {ref for ref, value in zip(refs, values, strict=True) if value is not None}

    async def depth(self, target: str) -> int:
        return int(await self.redis.hlen(k.OUTBOX + target))  # type: ignore[misc]

    async def ready(self, target: str, now: int, limit: int = BULK_MAX_OPS) -> list[Queued]:
        """The writes that may go now, longest waiting first."""
        return await self._load(target, await self.redis.zrangebyscore(
            k.OUTBOX_READY + target, "-inf", now, start=0, num=limit))

    async def next_ready(self, target: str) -> int | None:
        """When the earliest write in the outbox may go; None when it is empty."""
        first = await self.redis.zrange(k.OUTBOX_READY + target, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def in_flight(self, target: str) -> Batch | None:
        raw = await self.redis.get(k.OUTBOX_BATCH + target)
        return Batch.load(raw) if raw else None

    async def entries(self, target: str, limit: int = 100) -> list[Queued]:
        """The first ``limit`` writes in the outbox, in the order they go (for operators)."""
        return await self._load(target, await self.redis.zrange(k.OUTBOX_READY + target, 0,
                                                                limit - 1))

    async def _load(self, target: str, refs: list[bytes]) -> list[Queued]:
        """The outbox entries of ``refs``, in that order (one gone meanwhile is left out)."""
        if not refs:
            return []
        values = await self.redis.hmget(k.OUTBOX + target, refs)  # type: ignore[misc]
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
