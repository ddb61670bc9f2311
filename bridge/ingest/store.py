"""Durable storage of accepted events: one Lua script, one round trip per webhook.

The script dedupes by webhook id, orders each listing's changes (version, then occurred_at; at
equal times the later arrival wins; nothing from before a snapshot that deleted the listing
counts), folds the event into the desired state of its listings and groups, records why a
listing was deleted, and marks the groups due for a flush (trailing debounce capped by max
wait). It also appends the event to the story of each listing it names (``lb:trace:{ref}``:
applied, stale or duplicate), in the same call, so ``bridge trace`` costs the webhook no round
trip. Key layout: ``bridge/constants.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge import constants as k
from bridge import counters
from bridge.connections import Durability
from bridge.ingest.events import ValidEvent
from bridge.ingest.script_client import ScriptBatcher
from bridge.scripts import splice
from bridge.settings import (
    DebounceSettings,
    RetentionSettings,
    TraceSettings,
    WebhookSettings,
)

_INGEST = """
-- Key names and settings are spliced in as constants: fewer arguments to pack on every call.
local SEEN, LISTING, MEMBERS, GROUPS = __SEEN__, __LISTING__, __MEMBERS__, __GROUPS__
local PENDING, DUE, STATS, METRICS = __PENDING__, __DUE__, __STATS__, __METRICS__
local DIRTY, BODYK = __DIRTY__, __BODYK__
-- The listing hash's fields, by position (bridge.constants.LISTING_FIELDS), and its causes.
local G, V, T, D, BODY, AT, CAUSE, FLOOR = __LISTING_FIELDS__
local CAUSE_DELETED, CAUSE_SNAPSHOT = __CAUSE_DELETED__, __CAUSE_SNAPSHOT__
local ttl, stats_ttl = __TTL__, __STATS_TTL__
local window, maxwait = __WINDOW__, __MAXWAIT__
local horizon, idle = __HORIZON__, __IDLE__
local TRACE, TRACE_MAXLEN, trace_ttl = __TRACE__, __TRACE_MAXLEN__, __TRACE_TTL__
local id, now, kind, group = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local occurred = tonumber(ARGV[5])
local stats = STATS .. math.floor(now / 60000)

-- A listing's story: one entry per listing the event names, in the stored form of
-- bridge/stories.py (["e", at, webhook_id, type, group, at - occurred_at, version, result]).
-- The strings are encoded once per call.
local TYPES = {c = true, u = true, d = true, s = true}
local head = '["e",' .. ARGV[2] .. ',' .. cjson.encode(id) .. ',"' ..
             (TYPES[kind] and kind or 'u') .. '",' .. cjson.encode(group) .. ',' ..
             string.format('%d', now - occurred) .. ','
local function trace(ref, version, result, absent)
  local key = TRACE .. ref
  local entry = head .. (version == '-1' and 'null' or version) .. ',"' .. result ..
                (absent and '",1]' or '"]')
  if redis.call('LPUSH', key, entry) > TRACE_MAXLEN then
    redis.call('LTRIM', key, 0, TRACE_MAXLEN - 1)
  end
  redis.call('PEXPIRE', key, trace_ttl)
end
-- Results by their stored letter: applied, stale, duplicate.
local function outcome(applied)
  if applied == 1 then return 'a' end
  return 's'
end

-- Count per minute; the first count of a minute sets the expiry.
local function count(field)
  if redis.call('HINCRBY', stats, field, 1) == 1 then redis.call('EXPIRE', stats, stats_ttl) end
end
-- And since ever, by outcome, for Prometheus (bridge/counters.py): accepted, duplicate, stale.
local function total(field) redis.call('HINCRBY', METRICS, field, 1) end

if not redis.call('SET', SEEN .. id, now, 'NX', 'EX', ttl) then
  count('duplicate')
  total(__EVENT_DUPLICATE__)
  -- The listings a redelivery names are the ones the first delivery named.
  for i = 6, #ARGV, 3 do trace(ARGV[i], ARGV[i + 1], 'd') end
  return {0, 0}
end
count('received')

-- Older than the horizon: the tombstones that would order it may have expired, so it is
-- refused as stale (an expired tombstone never lets a late event bring a listing back).
if occurred < now - horizon then
  count('stale')
  total(__EVENT_STALE__)
  for i = 6, #ARGV, 3 do trace(ARGV[i], ARGV[i + 1], 's') end
  return {1, 0}
end

-- Mark a group as having changes: trailing window, capped by max wait from its first change.
-- Returns the group's change counter, now.
local bursts = {}  -- groups whose burst of changes this call began
local function touch(g)
  local pk = PENDING .. g
  local cur = redis.call('HMGET', pk, 'first', 'seq')
  local first, seq = tonumber(cur[1]), (tonumber(cur[2]) or 0) + 1
  if not first then
    -- A burst begins (the first change since the group's last claim): the rarer upkeep goes
    -- here, not in every event. A group idle this long forgets its change counter.
    first = now
    bursts[g] = true
    redis.call('HSET', pk, 'first', now, 'last', now, 'seq', seq)
    redis.call('PEXPIRE', pk, idle)
    redis.call('SADD', GROUPS, g)
  else
    -- The counter read and written back in one call with 'last' (the script is atomic): one
    -- Redis call less per event than HINCRBY.
    redis.call('HSET', pk, 'last', now, 'seq', seq)
  end
  redis.call('ZADD', DUE, math.min(now + window, first + maxwait), g)
  return seq
end

-- The listing changed at the group's change counter ``seq``: flushes plan it until every
-- target has settled that change (bridge/delivery/claims.py).
local function dirty(g, ref, seq)
  redis.call('HSET', DIRTY .. g, ref, seq)
  if bursts[g] then redis.call('PEXPIRE', DIRTY .. g, idle) end
end

-- Is (v, t) not older than the stored (cv, ct)? Versions order when both have one and differ
-- (-1: none); otherwise occurred_at does, and at equal times the later arrival wins.
local function current(v, t, cv, ct)
  if v >= 0 and cv >= 0 and v ~= cv then return v > cv end
  return t >= ct
end

local function apply(ref, v, t, g, deleted, body)
  local lk = LISTING .. ref
  local cur = redis.call('HMGET', lk, V, T, G, FLOOR, CAUSE, AT)
  local moved_from = nil
  if cur[2] then
    -- A snapshot that deleted the listing at its floor outranks any event from before it.
    local floor = tonumber(cur[4])
    if floor and t < floor then return 0 end
    if not current(v, t, tonumber(cur[1]), tonumber(cur[2])) then return 0 end
    if deleted then g = cur[3] end  -- a deletion applies wherever the listing is
    if cur[3] ~= g then moved_from = cur[3] end
  end
  -- A compacted tombstone (it has no AT) expires; a listing that comes back does not.
  if cur[2] and not cur[6] then redis.call('PERSIST', lk) end
  if deleted then
    redis.call('HSET', lk, V, v, T, t, G, g, D, '1', CAUSE, CAUSE_DELETED, AT, now)
  else
    -- The body has a key of its own: with only short values the hash stays a listpack.
    redis.call('HSET', lk, V, v, T, t, G, g, D, '0', AT, now)
    redis.call('SET', BODYK .. ref, body)
    if cur[5] then redis.call('HDEL', lk, CAUSE) end
  end
  if moved_from then
    redis.call('SREM', MEMBERS .. moved_from, ref)
    touch(moved_from)
  end
  -- A listing that is not a compacted tombstone (it has AT) is a member of its group's set
  -- (bridge/constants.py): only a new, moved or revived one joins.
  if not (cur[6] and cur[3] == g) then redis.call('SADD', MEMBERS .. g, ref) end
  dirty(g, ref, touch(g))
  return 1
end

local applied = 0
if kind == 's' then
  local present = {}
  for i = 6, #ARGV, 3 do
    present[ARGV[i]] = true
    local one = apply(ARGV[i], tonumber(ARGV[i + 1]), occurred, group, false, ARGV[i + 2])
    trace(ARGV[i], ARGV[i + 1], outcome(one))
    applied = applied + one
  end
  -- Listings of the group absent from the snapshot are deleted, unless changed since (at the
  -- same time the later arrival wins). The snapshot's time becomes the floor of each listing it
  -- leaves deleted: no event from before it can bring the listing back, whatever its version.
  local seq = touch(group)
  for _, ref in ipairs(redis.call('SMEMBERS', MEMBERS .. group)) do
    if not present[ref] then
      local lk = LISTING .. ref
      local cur = redis.call('HMGET', lk, T, D, FLOOR)
      if cur[2] == '1' then
        if (tonumber(cur[3]) or -1) < occurred then redis.call('HSET', lk, FLOOR, occurred) end
      elseif cur[1] and tonumber(cur[1]) <= occurred then
        -- A live listing's floor is at most its time: this snapshot's time is the new max.
        redis.call('HSET', lk, D, '1', T, occurred, CAUSE, CAUSE_SNAPSHOT, FLOOR, occurred,
                   AT, now)
        dirty(group, ref, seq)
        trace(ref, '-1', 'a', true)
        applied = applied + 1
      end
    end
  end
else
  applied = apply(ARGV[6], tonumber(ARGV[7]), occurred, group, kind == 'd', ARGV[8])
  if applied == 0 then count('stale') end
  trace(ARGV[6], ARGV[7], outcome(applied))
end
total((kind ~= 's' and applied == 0) and __EVENT_STALE__ or __EVENT_ACCEPTED__)

return {1, applied}
"""

# Settings are known only when the store is built; everything else is spliced in now, so a
# misspelt name fails the import.
_SETTINGS = ("TTL", "WINDOW", "MAXWAIT", "TRACE_TTL", "HORIZON")
INGEST = splice(_INGEST, {
    "SEEN": k.SEEN, "LISTING": k.LISTING, "MEMBERS": k.MEMBERS, "GROUPS": k.GROUPS,
    "PENDING": k.PENDING, "DUE": k.DUE, "STATS": k.STATS, "STATS_TTL": k.STATS_TTL_S,
    "LISTING_FIELDS": k.LISTING_FIELDS, "CAUSE_DELETED": k.CAUSE_DELETED,
    "CAUSE_SNAPSHOT": k.CAUSE_SNAPSHOT, "TRACE": k.TRACE, "TRACE_MAXLEN": k.TRACE_MAXLEN,
    "METRICS": k.METRICS, "IDLE": k.GROUP_IDLE_MS, "DIRTY": k.DIRTY, "BODYK": k.BODY,
    "EVENT_ACCEPTED": counters.WEBHOOK_EVENTS.field("accepted"),
    "EVENT_DUPLICATE": counters.WEBHOOK_EVENTS.field("duplicate"),
    "EVENT_STALE": counters.WEBHOOK_EVENTS.field("stale"),
}, later=_SETTINGS)


@dataclass(frozen=True)
class Stored:
    duplicate: bool
    applied: int


class EventStore:
    """Writes accepted events to Redis; the worker side reads the state they fold into."""

    def __init__(self, redis: Redis, url: str, webhook: WebhookSettings,
                 debounce: DebounceSettings,
                 prepare: Callable[[], Awaitable[Durability]] | None = None,
                 trace: TraceSettings | None = None,
                 retention: RetentionSettings | None = None) -> None:
        """``prepare`` runs on every (re)connect of the script client and says what a stored
        event must wait for (``bridge.connections.RedisCheck``)."""
        self._redis = redis
        self._script = ScriptBatcher(url, ingest_script(webhook, debounce, trace, retention),
                                     prepare=prepare)
        self._unstored = 0  # events answered 503 and not counted in Redis yet

    async def put(self, webhook_id: str, event: ValidEvent, now_ms: int) -> Stored:
        try:
            status, applied = await self._script.call_packed(
                *script_arguments(webhook_id, now_ms, event))
        except (RedisError, OSError):
            self._unstored += 1  # the webhook answers 503; counted once Redis is back
            raise
        if self._unstored:
            await self._count_unstored()
        return Stored(duplicate=status == 0, applied=int(applied))

    async def aclose(self) -> None:
        await self._script.aclose()

    async def count_rejection(self, reason: str, now_ms: int) -> None:
        """Count a refused request by reason, for the dashboard; never fails the answer."""
        key = f"{k.STATS}{now_ms // 60_000}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(key, f"rejected:{reason}", 1)
                pipe.expire(key, k.STATS_TTL_S)
                pipe.hincrby(k.METRICS, counters.WEBHOOK_REJECTIONS.field(reason), 1)
                await pipe.execute()
        except (RedisError, OSError):
            pass

    async def _count_unstored(self) -> None:
        """Redis stores events again: add the ones refused meanwhile to the cumulative count
        (not the per-minute stats: their minutes are gone)."""
        unstored, self._unstored = self._unstored, 0
        try:
            await self._redis.hincrby(k.METRICS, counters.WEBHOOK_REJECTIONS.field(  # type: ignore[misc]
                "storage_unavailable"), unstored)
        except (RedisError, OSError):
            self._unstored += unstored


def ingest_script(webhook: WebhookSettings, debounce: DebounceSettings,
                  trace: TraceSettings | None = None,
                  retention: RetentionSettings | None = None) -> str:
    trace = trace or TraceSettings()
    retention = retention or RetentionSettings()
    return splice(INGEST, {"TTL": webhook.dedupe_ttl_seconds, "WINDOW": debounce.window_ms,
                           "MAXWAIT": debounce.max_wait_ms, "TRACE_TTL": trace.retention_ms,
                           "HORIZON": retention.horizon_ms})


# The script's ARGV[3]: the event's type, in a letter (created and updated are both upserts).
_KIND = {"listing.created": b"c", "listing.updated": b"u", "listing.deleted": b"d",
         "group.snapshot": b"s"}
_HEAD = b"$%d\r\n%s\r\n$%d\r\n%s\r\n$1\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
_LISTING = b"$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"


def script_arguments(webhook_id: str, now_ms: int, event: ValidEvent) -> tuple[int, bytes]:
    """The script's ARGV, packed as RESP bulk strings, and their count: webhook id, now, kind,
    group, occurred_at (ms), then ref, version (-1: none), body for each listing. One format
    per listing rather than a loop over the arguments: the webhook's hot path."""
    webhook, group = webhook_id.encode(), event.group.encode()
    now, occurred = b"%d" % now_ms, b"%d" % event.occurred_ms
    parts = [_HEAD % (len(webhook), webhook, len(now), now, _KIND[event.type], len(group), group,
                      len(occurred), occurred)]
    for ref, version, body in event.listings:
        ref_bytes, version_bytes = ref.encode(), b"%d" % version
        parts.append(_LISTING % (len(ref_bytes), ref_bytes, len(version_bytes), version_bytes,
                                 len(body), body))
    return 5 + 3 * len(event.listings), b"".join(parts)
