"""Bounded state for deleted listings: once every target has accepted a deletion (or never had
the listing), its body and everything kept about it per target go, leaving a tombstone.

A tombstone is what ordering needs and nothing more: the listing hash's version, time, group,
deleted flag, snapshot floor and the webhook ids that set it. It expires ``[retention]
horizon_days`` after the later of its time and its floor; an event received later is refused by
the horizon itself if the tombstone would have refused it by time (``bridge/ingest/store.py``).
Not by a TTL: the fold judges each event as of its receipt, so a tombstone must outlive its
expiry while the inbox still holds an event received before it. The compaction lists it in
``lb:tombstones`` with its expiry, and the fold removes it once no such event remains. The
listing also leaves its group's members, so flushes no longer read or plan it.

A flush compacts at its end, when no target has anything left to do for the group, through one
script fenced by the group's lease; the script compacts a listing only if it is still the same
deletion the flush judged (version and time), so a listing that came back meanwhile is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

from bridge import constants as k
from bridge.delivery.desired import DesiredListing
from bridge.delivery.idempotency import Intent
from bridge.delivery.ledger import Accepted
from bridge.scripts import splice

_G, _V, _T, _D, _, _, _, _FLOOR = k.LISTING_FIELDS

# ARGV: group, token, horizon_ms, JSON [[ref, version, time]...], JSON [targets], JSON
# [per-listing targets]. Returns how many listings were compacted, or -1 (lease lost).
COMPACT = splice("""
local g, token, horizon = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('GET', __LEASE__ .. g) ~= token then return -1 end
local targets, per_listing = cjson.decode(ARGV[5]), cjson.decode(ARGV[6])
local V, T, D, G, FLOOR, SOURCES = __FIELDS__
local done = 0
for _, item in ipairs(cjson.decode(ARGV[4])) do
  local ref = item[1]
  local lk = __LISTING__ .. ref
  local cur = redis.call('HMGET', lk, V, T, D, G, FLOOR, SOURCES)
  if cur[3] == '1' and cur[4] == g and tonumber(cur[1]) == item[2]
      and tonumber(cur[2]) == item[3] then
    -- Written afresh, not trimmed: a hash that once held a body keeps its large encoding.
    redis.call('DEL', lk, __BODY__ .. ref)
    redis.call('HSET', lk, G, g, V, cur[1], T, cur[2], D, '1')
    if cur[5] then redis.call('HSET', lk, FLOOR, cur[5]) end
    if cur[6] then redis.call('HSET', lk, SOURCES, cur[6]) end
    -- Even if already expired: an event received before then may still wait in the inbox;
    -- the fold removes it once none can.
    local expires = math.max(tonumber(cur[2]), tonumber(cur[5]) or 0) + horizon
    redis.call('ZADD', __TOMBSTONES__, expires, ref)
    redis.call('SREM', __MEMBERS__ .. g, ref)
    redis.call('HDEL', __DIRTY__ .. g, ref)
    for _, t in ipairs(targets) do
      redis.call('HDEL', __QUARANTINE__ .. t, ref)
      redis.call('HDEL', __INTENT__ .. t, ref)
    end
    for _, t in ipairs(per_listing) do
      redis.call('HDEL', __ACCEPTED__ .. t, ref)
      redis.call('HDEL', __ADOPT__ .. t, ref)
      redis.call('SREM', __LINKED__ .. t, ref)
    end
    done = done + 1
  end
end
return done
""", {"LEASE": k.LEASE, "LISTING": k.LISTING, "BODY": k.BODY, "MEMBERS": k.MEMBERS,
      "QUARANTINE": k.QUARANTINE,
      "INTENT": k.INTENT, "ACCEPTED": k.ACCEPTED, "ADOPT": k.ADOPT, "LINKED": k.LINKED,
      "DIRTY": k.DIRTY, "TOMBSTONES": k.TOMBSTONES,
      "FIELDS": (_V, _T, _D, _G, _FLOOR, k.LISTING_SOURCES)})


@dataclass(frozen=True)
class PerListingView:
    """What a per-listing target's ledger says of some deleted listings."""

    accepted: dict[str, Accepted]
    intents: dict[str, Intent]
    waiting: set[str]  # in the outbox
    wanted: dict[str, str | None]  # ref -> the deletion's digest (None: nothing is sent)

    def done(self, ref: str) -> bool:
        """The target accepted the deletion, never had the listing, or is never told."""
        if ref in self.intents or ref in self.waiting:
            return False
        held = self.accepted.get(ref)
        want = self.wanted.get(ref)
        return held is None or want is None or held.digest == want


def sync_done(accepted_refs: set[str], sync_intent: bool, ref: str) -> bool:
    """A group-sync target no longer holds the listing, and no sync is in doubt."""
    return not sync_intent and ref not in accepted_refs


class Tombstones:
    def __init__(self, redis: Redis, horizon_ms: int) -> None:
        self.horizon_ms = horizon_ms
        self._compact = redis.register_script(COMPACT)

    async def compact(self, group: str, token: str, now: int, listings: Sequence[DesiredListing],
                      targets: list[str], per_listing: list[str]) -> int:
        """Compact these deleted listings of ``group`` under the flush's lease (token); how
        many were; -1 if the lease was lost (nothing done). ``now`` is not needed any more:
        a tombstone is kept whenever it expires (the fold removes it)."""
        if not listings:
            return 0
        items = [[item.ref, item.version if item.version is not None else -1,
                  item.occurred_ms] for item in listings]
        return int(await self._compact(keys=[], args=[
            group, token, self.horizon_ms, orjson.dumps(items), orjson.dumps(targets),
            orjson.dumps(per_listing)]))
