"""Claiming and finishing a group's flush, atomically.

A claim takes the group's pending changes (clears ``first`` so new changes start a new debounce),
puts a *lease* on the group in ``lb:due`` (now + job timeout + margin: if the worker dies, the
group falls due again by itself), and returns a consistent snapshot of the group's desired state.
A finish removes the group from ``lb:due`` only if nothing arrived meanwhile, or schedules the
next attempt when a target still has work (retry, rate limit, time budget).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

from bridge import constants as k

CLAIM = """
local P, g, now, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local pk = P .. 'pending:' .. g
local seq = redis.call('HGET', pk, 'seq') or '0'
local first = redis.call('HGET', pk, 'first') or ''
redis.call('HDEL', pk, 'first')
redis.call('ZADD', P .. 'due', now + lease, g)
local out = {seq, first}
for _, ref in ipairs(redis.call('SMEMBERS', P .. 'members:' .. g)) do
  local h = redis.call('HMGET', P .. 'listing:' .. ref, 'd', 'body', 'at')
  out[#out + 1] = ref
  out[#out + 1] = h[1] or '1'
  out[#out + 1] = h[2] or ''
  out[#out + 1] = h[3] or '0'
end
return out
"""

FINISH = """
local P, g, claimed, next_due = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local seq = redis.call('HGET', P .. 'pending:' .. g, 'seq') or '0'
if seq ~= claimed then
  -- Changes arrived during the flush and set their own due time; only bring it forward.
  if next_due >= 0 then redis.call('ZADD', P .. 'due', 'LT', next_due, g) end
  return 0
end
if next_due >= 0 then
  redis.call('ZADD', P .. 'due', next_due, g)
else
  redis.call('ZREM', P .. 'due', g)
end
return 1
"""


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
class DesiredListing:
    ref: str
    deleted: bool
    body: dict[str, object] | None  # the canonical listing; None for a bare tombstone
    received_ms: int


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
        raw = await self._claim(keys=[], args=[k.PREFIX, group, now_ms, self._lease_ms])
        seq, first = _text(raw[0]), _text(raw[1])
        listings = []
        for i in range(2, len(raw), 4):
            body = raw[i + 2]
            listings.append(DesiredListing(
                ref=_text(raw[i]),
                deleted=_text(raw[i + 1]) == "1",
                body=orjson.loads(body) if body else None,
                received_ms=int(raw[i + 3]),
            ))
        listings.sort(key=lambda listing: listing.ref)
        return Claim(group, seq, int(first) if first else None, listings)

    async def finish(self, claim: Claim, next_due_ms: int | None) -> bool:
        """True if the group had no new changes; False if they arrived during the flush."""
        due = -1 if next_due_ms is None else next_due_ms
        return bool(await self._finish(keys=[], args=[k.PREFIX, claim.group, claim.seq, due]))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
