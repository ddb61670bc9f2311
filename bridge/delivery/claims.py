"""Claiming and finishing a group's flush, atomically.

A claim takes the group's pending changes (clears ``first`` so new changes start a new debounce),
puts a *lease* on the group in ``lb:due`` (now + job timeout + margin: if the worker dies, the
group falls due again by itself), and returns a consistent snapshot of the group's desired state.
A finish removes the group from ``lb:due`` only if nothing arrived meanwhile, or schedules the
next attempt when a target still has work (retry, rate limit, time budget).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from bridge import constants as k
from bridge.delivery.desired import FIELDS, DesiredListing, decode_fields
from bridge.scripts import splice

# Planning imports DesiredListing from here.
__all__ = ["CLAIM", "FINISH", "Claim", "DesiredListing", "Flushes", "mark_due"]

# Returns seq, first, then per member its ref and its listing fields in FIELDS order (nil for a
# field the hash lacks: all of them when the member has no hash).
CLAIM = splice("""
local g, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local pk = __PENDING__ .. g
local seq = redis.call('HGET', pk, 'seq') or '0'
local first = redis.call('HGET', pk, 'first') or ''
redis.call('HDEL', pk, 'first')
redis.call('ZADD', __DUE__, now + lease, g)
local out = {seq, first}
for _, ref in ipairs(redis.call('SMEMBERS', __MEMBERS__ .. g)) do
  out[#out + 1] = ref
  local values = redis.call('HMGET', __LISTING__ .. ref, __FIELDS__)
  for i = 1, #values do out[#out + 1] = values[i] end  -- a missing field is false: nil to us
end
return out
""", {"PENDING": k.PENDING, "DUE": k.DUE, "MEMBERS": k.MEMBERS, "LISTING": k.LISTING,
      "FIELDS": FIELDS})

FINISH = splice("""
local g, claimed, next_due = ARGV[1], ARGV[2], tonumber(ARGV[3])
local seq = redis.call('HGET', __PENDING__ .. g, 'seq') or '0'
if seq ~= claimed then
  -- Changes arrived during the flush and set their own due time; only bring it forward.
  if next_due >= 0 then redis.call('ZADD', __DUE__, 'LT', next_due, g) end
  return 0
end
if next_due >= 0 then
  redis.call('ZADD', __DUE__, next_due, g)
else
  redis.call('ZREM', __DUE__, g)
end
return 1
""", {"PENDING": k.PENDING, "DUE": k.DUE})


async def mark_due(redis: Redis, groups: list[str], at_ms: int) -> None:
    """Make groups due now, as a change would: a flush running meanwhile keeps them due."""
    if not groups:
        return
    async with redis.pipeline(transaction=True) as pipe:
        for group in groups:
            pipe.hincrby(f"{k.PENDING}{group}", "seq", 1)
        pipe.zadd(k.DUE, dict.fromkeys(groups, at_ms), lt=True)
        await pipe.execute()


@dataclass(frozen=True)
class Claim:
    group: str
    seq: str
    first_pending_ms: int | None
    listings: list[DesiredListing]


class Flushes:
    def __init__(self, redis: Redis, lease_ms: int) -> None:
        self._claim = redis.register_script(CLAIM)
        self._finish = redis.register_script(FINISH)
        self._lease_ms = lease_ms

    async def claim(self, group: str, now_ms: int) -> Claim:
        raw = await self._claim(keys=[], args=[group, now_ms, self._lease_ms])
        seq, first = _text(raw[0]), _text(raw[1])
        step = 1 + len(FIELDS)
        listings = [_listing(group, _text(raw[i]), raw[i + 1:i + step])
                    for i in range(2, len(raw), step)]
        listings.sort(key=lambda listing: listing.ref)
        return Claim(group, seq, int(first) if first else None, listings)

    async def finish(self, claim: Claim, next_due_ms: int | None) -> bool:
        """True if the group had no new changes; False if they arrived during the flush."""
        due = -1 if next_due_ms is None else next_due_ms
        return bool(await self._finish(keys=[], args=[claim.group, claim.seq, due]))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _listing(group: str, ref: str, values: Sequence[bytes | str | None]) -> DesiredListing:
    # A member without a hash reads as a bare tombstone, as it always has.
    return decode_fields(ref, values) or DesiredListing(
        ref=ref, group=group, version=None, occurred_ms=0, deleted=True, body=None,
        received_ms=0)
