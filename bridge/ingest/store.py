"""Durable storage of accepted events, and their folding into the desired state.

Two Lua scripts. The webhook's (``accept``, one round trip per webhook) dedupes by webhook id
and appends the event to the inbox (``lb:inbox``): durable, in arrival order. The
workers' (``fold``, ``bridge/ingest/inbox.py``) takes the inbox's oldest events and, one by one
in that order, orders each listing's changes (version, then occurred_at; at equal times the
later arrival wins, unless it is a redelivery of an event that set the listing at that time;
nothing from before a snapshot that deleted the listing counts), folds the event into the
desired state of its listings and groups, records why a listing was deleted, marks the groups
due for a flush (trailing debounce capped by max wait, from the time the event was received)
and appends the event to the story of each listing it names (``lb:trace:{ref}``: applied, stale
or duplicate). Every event is judged as of its receipt, however late it is folded: a compacted
tombstone orders the events received until its expiry, and the fold removes it only once no
event received before then can still be folded. Key layout: ``bridge/constants.py``.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge import constants as k
from bridge import counters
from bridge.connections import Durability
from bridge.ingest.admission import MemoryGauge, StorageFull
from bridge.ingest.events import ValidEvent
from bridge.ingest.script_client import ScriptBatcher
from bridge.scripts import LuaValue, splice
from bridge.settings import (
    DebounceSettings,
    RetentionSettings,
    TraceSettings,
    WebhookSettings,
)

# What both scripts share: key names, settings, and the event being handled (``begin``).
_COMMON = """
-- Key names and settings are spliced in as constants: fewer arguments to pack on every call.
local SEEN, LISTING, MEMBERS, GROUPS = __SEEN__, __LISTING__, __MEMBERS__, __GROUPS__
local PENDING, DUE, STATS, METRICS = __PENDING__, __DUE__, __STATS__, __METRICS__
local DIRTY, SETTLED, BODYK, INBOX = __DIRTY__, __SETTLED__, __BODYK__, __INBOX__
local TOMBSTONES, DEAD, RETRIES = __TOMBSTONES__, __DEAD__, __RETRIES__
-- The listing hash's fields, by position (bridge.constants.LISTING_FIELDS), its causes, and
-- the field naming the events that set its state (bridge.constants.LISTING_SOURCES).
local G, V, T, D, BODY, AT, CAUSE, FLOOR = __LISTING_FIELDS__
local SOURCES = __SOURCES__
local CAUSE_DELETED, CAUSE_SNAPSHOT = __CAUSE_DELETED__, __CAUSE_SNAPSHOT__
local ttl, stats_ttl = __TTL__, __STATS_TTL__
local window, maxwait = __WINDOW__, __MAXWAIT__
local horizon, idle = __HORIZON__, __IDLE__
local TRACE, TRACE_MAXLEN, trace_ttl = __TRACE__, __TRACE_MAXLEN__, __TRACE_TTL__
-- What a redelivery's entry starts with (no msgpack array does): only its story is told.
local DUPLICATE = __DUPLICATE__

-- The event being handled: its entry (bridge.ingest.store.entry: webhook id, received at,
-- kind, group, occurred_at, then ref, version (-1: none), body per listing) and what follows.
local A, id, now, kind, group, occurred, stats, head

-- A listing's story: one entry per listing the event names, in the stored form of
-- bridge/stories.py (["e", at, webhook_id, type, group, at - occurred_at, version, result]).
-- The strings are encoded once per event.
local TYPES = {c = true, u = true, d = true, s = true}
local function begin(decoded)
  A = decoded
  id, now, kind, group, occurred = A[1], tonumber(A[2]), A[3], A[4], tonumber(A[5])
  stats = STATS .. math.floor(now / 60000)
  head = '["e",' .. A[2] .. ',' .. cjson.encode(id) .. ',"' ..
         (TYPES[kind] and kind or 'u') .. '",' .. cjson.encode(group) .. ',' ..
         string.format('%d', now - occurred) .. ','
end
"""

# The webhook's script: dedupe, then keep the event in the inbox for the workers to fold. The
# only work in the request's round trip (see bridge/ingest/webhook.py for what it saves).
# KEYS: none (names spliced in). ARGV: webhook id, received at, the event's entry, and at most
# how many events the inbox may hold (optional: no limit). Returns {1, 0} stored, {0, 0}
# duplicate, {2, 0} refused: the inbox is full.
_ACCEPT = _COMMON + """
-- Count per minute (of the event's receipt); the first count of a minute sets the expiry.
local function count(field)
  if redis.call('HINCRBY', stats, field, 1) == 1 then redis.call('EXPIRE', stats, stats_ttl) end
end
-- And since ever, by outcome, for Prometheus (bridge/counters.py): accepted, duplicate, stale.
local function total(field) redis.call('HINCRBY', METRICS, field, 1) end
local function duplicate()
  stats = STATS .. math.floor(tonumber(ARGV[2]) / 60000)
  count('duplicate')
  total(__EVENT_DUPLICATE__)
end

-- A full inbox refuses a new event before its dedupe marker is set (its retry must not pass
-- for a duplicate); a redelivery of a stored one is answered as such, its story left untold.
local limit = tonumber(ARGV[4])
if limit and redis.call('LLEN', INBOX) >= limit then
  if redis.call('EXISTS', SEEN .. ARGV[1]) == 0 then return {2, 0} end
  duplicate()
  return {0, 0}
end
if not redis.call('SET', SEEN .. ARGV[1], ARGV[2], 'NX', 'EX', ttl) then
  duplicate()
  -- Into the inbox too, marked, so its listings' stories tell it after the first delivery:
  -- without its bodies (a snapshot's may be a megabyte), which no story tells.
  local story = cmsgpack.unpack(ARGV[3])
  for i = 8, #story, 3 do story[i] = '' end
  redis.call('RPUSH', INBOX, DUPLICATE .. cmsgpack.pack(story))
  return {0, 0}
end
-- Counted as received by the fold, in the minute it was received: one call less here.
redis.call('RPUSH', INBOX, ARGV[3])
return {1, 0}
"""

# The workers' script: folds the inbox's oldest events, in arrival order, into the desired
# state, and removes them, in one atomic step: a fold killed midway never ran, and no event is
# folded twice. Then, inbox empty or not, removes compacted tombstones no event can need any
# more (``purge``). KEYS: none (names spliced in). ARGV: at most how many events, and how many
# listings (past the first event). Returns {events folded, listings they applied, events left},
# then why each entry it set aside could not be folded. An entry that cannot be folded (its shape is
# checked before anything is written for it; an error of Redis's own is caught) goes to
# lb:inbox:dead and the rest is folded: Redis does not undo a failing script's writes, so one
# left to fail would drop the entries it had popped and the due marks of those it had folded.
# ``allow-oom`` (Redis >= 7.0, Valkey): a Redis past its maxmemory still lets the fold run, so
# the inbox it frees can never be what keeps it full (the webhook stops admitting well before,
# bridge/ingest/admission.py, leaving the room that state takes). Each entry leaves the inbox
# as it is read (LPOP), before what it folds into is written.
_FOLD = "#!lua flags=allow-oom\n" + _COMMON + """
local max_events, max_listings = tonumber(ARGV[1]), tonumber(ARGV[2])
local GRACE, PURGE = __GRACE__, __PURGE__

-- What many events of a batch write to the same key is written once, at the end of the batch
-- (``settle``): counters, each group's debounce marks, each story's expiry. The script is
-- atomic and Redis's clock stands still while it runs, so the state it leaves is the one that
-- writing them event by event leaves (tests/ingest/test_inbox.py compares them key by key),
-- for fewer Redis calls per event.
local counts, totals = {}, {}  -- per-minute counters by key and field; cumulative by field
local groups = {}  -- group -> {first, last, seq, burst}, as touch() left it
local stories = {}  -- story keys written
-- While an entry is folded: the counts it added (table, field, ...), taken back if it fails.
local made

-- Count per minute (of the event's receipt): the first count of a minute sets the expiry.
local function count(field)
  local minute = counts[stats]
  if not minute then minute = {}; counts[stats] = minute end
  minute[field] = (minute[field] or 0) + 1
  made[#made + 1] = minute; made[#made + 1] = field
end
-- And since ever, by outcome, for Prometheus (bridge/counters.py): accepted, duplicate, stale.
local function total(field)
  totals[field] = (totals[field] or 0) + 1
  made[#made + 1] = totals; made[#made + 1] = field
end
local function uncount()
  for i = 1, #made, 2 do
    local t, field = made[i], made[i + 1]
    t[field] = t[field] - 1
    if t[field] == 0 then t[field] = nil end
  end
end

local function trace(ref, version, result, absent)
  local key = TRACE .. ref
  local entry = head .. (version == '-1' and 'null' or version) .. ',"' .. result ..
                (absent and '",1]' or '"]')
  if redis.call('LPUSH', key, entry) > TRACE_MAXLEN then
    redis.call('LTRIM', key, 0, TRACE_MAXLEN - 1)
  end
  stories[key] = true
end

-- Results by their stored letter: applied, stale, duplicate.
local function outcome(applied)
  if applied == 1 then return 'a' end
  return 's'
end

-- The highest change counter the group's other keys still hold: a target's settled seq, a
-- listing's unsettled change.
local function recorded(g)
  local top = 0
  for _, key in ipairs({SETTLED .. g, DIRTY .. g}) do
    for _, seq in ipairs(redis.call('HVALS', key)) do top = math.max(top, tonumber(seq)) end
  end
  return top
end

-- Mark a group as having changes: trailing window, capped by max wait from its first change.
-- Returns the group's change counter, now. Written to lb:pending and lb:due by settle().
local function touch(g)
  local mark = groups[g]
  if not mark then
    local cur = redis.call('HMGET', PENDING .. g, 'first', 'seq')
    -- No counter (lb:pending expired, or was lost): it goes on above every seq still recorded,
    -- never back to or below one a target settled, which would hide the change from claims.
    mark = {first = tonumber(cur[1]), seq = tonumber(cur[2]) or recorded(g)}
    groups[g] = mark
  end
  if not mark.first then
    -- A burst begins (the first change since the group's last claim): the rarer upkeep.
    mark.first, mark.burst = now, true
    redis.call('SADD', GROUPS, g)
  end
  mark.last, mark.seq = now, mark.seq + 1
  return mark.seq
end

-- The listing changed at the group's change counter ``seq``: flushes plan it until every
-- target has settled that change (bridge/delivery/claims.py).
local function dirty(g, ref, seq)
  redis.call('HSET', DIRTY .. g, ref, seq)
end

-- The batch's deferred writes (see above).
local function settle()
  for g, mark in pairs(groups) do
    local pk = PENDING .. g
    if mark.burst then
      redis.call('HSET', pk, 'first', mark.first, 'last', mark.last, 'seq', mark.seq)
    else
      redis.call('HSET', pk, 'last', mark.last, 'seq', mark.seq)
    end
    -- Every change renews the group's counter, unsettled changes and settled seqs: they share
    -- one lifetime, GROUP_IDLE_MS past the last change (or flush: its finish renews them).
    redis.call('PEXPIRE', pk, idle)
    redis.call('PEXPIRE', DIRTY .. g, idle)
    redis.call('PEXPIRE', SETTLED .. g, idle)
    redis.call('ZADD', DUE, math.min(mark.last + window, mark.first + maxwait), g)
  end
  for key in pairs(stories) do redis.call('PEXPIRE', key, trace_ttl) end
  for key, fields in pairs(counts) do
    for field, n in pairs(fields) do
      if redis.call('HINCRBY', key, field, n) == n then redis.call('EXPIRE', key, stats_ttl) end
    end
  end
  for field, n in pairs(totals) do redis.call('HINCRBY', METRICS, field, n) end
end

-- Is (v, t) not older than the stored (cv, ct)? Versions order when both have one and differ
-- (-1: none); otherwise occurred_at does, and at equal times the later arrival wins. Versions
-- are integers below 2^53 (the webhook refuses others): as Lua's doubles they compare exactly.
local function current(v, t, cv, ct)
  if v >= 0 and cv >= 0 and v ~= cv then return v > cv end
  return t >= ct
end

-- The listing's SOURCES field: the webhook ids, one a line (no header value holds a line
-- break), of the events that set its state at its time ``t``. A later arrival at that same
-- time wins unless it is one of them: a redelivery past the dedupe window (senders retry for
-- days) never undoes what a different event set since.
local function among(sources, webhook_id)
  return sources ~= nil and
         string.find('\\n' .. sources .. '\\n', '\\n' .. webhook_id .. '\\n', 1, true) ~= nil
end
-- SOURCES once this event sets the state: one more at the same time, else this one alone.
local function sources_after(sources, same_time)
  if same_time and sources then return sources .. '\\n' .. id end
  return id
end

-- Apply one listing of the event: 1 if it changed the listing, else 0 (and true when the
-- event is a redelivery of one that already set it).
local function apply(ref, v, t, g, deleted, body)
  local lk = LISTING .. ref
  local cur = redis.call('HMGET', lk, V, T, G, FLOOR, CAUSE, AT, SOURCES)
  if cur[2] and not cur[6] then
    -- A compacted tombstone (it has no AT) orders the events received until its expiry
    -- (lb:tombstones); for one received later it is gone, as it always was: the horizon
    -- refuses whatever it would have refused by time.
    local expiry = redis.call('ZSCORE', TOMBSTONES, ref)
    if expiry and now > tonumber(expiry) then
      redis.call('DEL', lk)
      redis.call('ZREM', TOMBSTONES, ref)
      cur = {}
    end
  end
  local moved_from, same_time = nil, false
  if cur[2] then
    -- A snapshot that deleted the listing at its floor outranks any event from before it.
    local floor = tonumber(cur[4])
    if floor and t < floor then return 0 end
    local ct = tonumber(cur[2])
    if not current(v, t, tonumber(cur[1]), ct) then return 0 end
    same_time = t == ct
    if same_time and among(cur[7], id) then return 0, true end
    if deleted then g = cur[3] end  -- a deletion applies wherever the listing is
    if cur[3] ~= g then moved_from = cur[3] end
  end
  local sources = sources_after(cur[7], same_time)
  -- A compacted tombstone that comes back leaves lb:tombstones (PERSIST: one that expired by
  -- a TTL, as tombstones did before lb:tombstones, must not expire either).
  if cur[2] and not cur[6] then
    redis.call('ZREM', TOMBSTONES, ref)
    redis.call('PERSIST', lk)
  end
  if deleted then
    redis.call('HSET', lk, V, v, T, t, G, g, D, '1', CAUSE, CAUSE_DELETED, AT, now,
               SOURCES, sources)
  else
    -- The body has a key of its own: with only short values the hash stays a listpack.
    redis.call('HSET', lk, V, v, T, t, G, g, D, '0', AT, now, SOURCES, sources)
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

-- A snapshot: its listings are upserted; listings of the group absent from it are deleted,
-- unless changed since (at the same time the later arrival wins). The snapshot's time becomes
-- the floor of each listing it leaves deleted: no event from before it can bring the listing
-- back, whatever its version.
local function snapshot()
  local applied = 0
  local present = {}
  for i = 6, #A, 3 do
    present[A[i]] = true
    local one, again = apply(A[i], tonumber(A[i + 1]), occurred, group, false, A[i + 2])
    trace(A[i], A[i + 1], again and 'd' or outcome(one))
    applied = applied + one
  end
  local seq = touch(group)
  for _, ref in ipairs(redis.call('SMEMBERS', MEMBERS .. group)) do
    if not present[ref] then
      local lk = LISTING .. ref
      local cur = redis.call('HMGET', lk, T, D, FLOOR, SOURCES)
      local same_time = tonumber(cur[1]) == occurred
      if cur[2] == '1' then
        if (tonumber(cur[3]) or -1) < occurred then redis.call('HSET', lk, FLOOR, occurred) end
      elseif same_time and among(cur[4], id) then
        -- This snapshot deleted it before (a redelivery): what brought it back since stands.
        trace(ref, '-1', 'd', true)
      elseif cur[1] and tonumber(cur[1]) <= occurred then
        -- A live listing's floor is at most its time: this snapshot's time is the new max.
        redis.call('HSET', lk, D, '1', T, occurred, CAUSE, CAUSE_SNAPSHOT, FLOOR, occurred,
                   AT, now, SOURCES, sources_after(cur[4], same_time))
        dirty(group, ref, seq)
        trace(ref, '-1', 'a', true)
        applied = applied + 1
      end
    end
  end
  return applied
end

-- One event, received at ``now``; how many listings it changed.
local function fold()
  count('received')
  -- Older than the horizon: the tombstones that would order it may have expired, so it is
  -- refused as stale (an expired tombstone never lets a late event bring a listing back).
  if occurred < now - horizon then
    count('stale')
    total(__EVENT_STALE__)
    for i = 6, #A, 3 do trace(A[i], A[i + 1], 's') end
    return 0
  end
  local applied
  if kind == 's' then
    applied = snapshot()
  else
    local again
    applied, again = apply(A[6], tonumber(A[7]), occurred, group, kind == 'd', A[8])
    if applied == 0 then count('stale') end
    trace(A[6], A[7], again and 'd' or outcome(applied))
  end
  total((kind ~= 's' and applied == 0) and __EVENT_STALE__ or __EVENT_ACCEPTED__)
  return applied
end

-- When the webhook received an inbox entry (a redelivery's too), read from the entry's first
-- bytes (it may be a snapshot of megabytes): a msgpack array of strings, received-at second.
local function received(entry)
  local i = string.byte(entry, 1) == string.byte(DUPLICATE) and 2 or 1
  local b = string.byte(entry, i)
  i = i + ((b == 0xdc and 3) or (b == 0xdd and 5) or 1)  -- the array's header
  for field = 1, 2 do
    local length, header
    b = string.byte(entry, i)
    if b >= 0xa0 and b <= 0xbf then length, header = b - 0xa0, 1
    elseif b == 0xd9 then length, header = string.byte(entry, i + 1), 2
    elseif b == 0xda then
      local x, y = string.byte(entry, i + 1, i + 2)
      length, header = x * 256 + y, 3
    else  -- 0xdb
      local w, x, y, z = string.byte(entry, i + 1, i + 4)
      length, header = ((w * 256 + x) * 256 + y) * 256 + z, 5
    end
    if field == 2 then
      return tonumber(string.sub(entry, i + header, i + header + length - 1))
    end
    i = i + header + length
  end
end

-- Compacted tombstones whose lifetime is over. One orders every event received until its
-- expiry, so it goes only once every event still waiting was received after that: before the
-- receipt of the inbox's oldest entry and before Redis's clock, less GRACE (a webhook reads
-- its clock before its script stores the event, on a host whose clock may differ a little).
-- At most PURGE a call: a mass expiry never holds Redis; the next calls take the rest.
local function purge()
  local clock = redis.call('TIME')
  local before = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) - GRACE
  if #redis.call('ZRANGEBYSCORE', TOMBSTONES, '-inf', string.format('(%d', before),
                 'LIMIT', 0, 1) == 0 then return end
  -- An event set aside may be retried, as of its receipt: its tombstones wait for it.
  if redis.call('EXISTS', DEAD) == 1 then return end
  local head = redis.call('LINDEX', INBOX, 0)
  if head then
    local ok, at = pcall(received, head)
    if not (ok and at) then return end  -- an entry it cannot read: keep every tombstone
    before = math.min(before, at - GRACE)
  end
  for _, ref in ipairs(redis.call('ZRANGEBYSCORE', TOMBSTONES, '-inf',
                                  string.format('(%d', before), 'LIMIT', 0, PURGE)) do
    redis.call('ZREM', TOMBSTONES, ref)
    -- Only the tombstone itself: a listing that came back (it has AT) left the set already.
    local lk = LISTING .. ref
    if redis.call('HEXISTS', lk, AT) == 0 then redis.call('DEL', lk) end
  end
end

-- An entry as bridge.ingest.store.entry writes it, decoded; or nil and why it cannot be folded.
-- Checked before anything is written for it: an entry of another shape (a release that wrote
-- them otherwise, one pushed by hand) goes aside whole instead of half folded.
local function integral(text)
  local n = tonumber(text)
  return n ~= nil and n == math.floor(n)
end
local function readable(payload)
  local ok, E = pcall(cmsgpack.unpack, payload)
  if not ok or type(E) ~= 'table' then return nil, 'not a msgpack array' end
  local n = #E
  if n < 5 or (n - 5) % 3 ~= 0 then
    return nil, 'an array of ' .. n .. ' fields: 5, then 3 per listing, expected'
  end
  for i = 1, n do
    if type(E[i]) ~= 'string' then return nil, 'field ' .. i .. ' is not a string' end
  end
  if not TYPES[E[3]] then return nil, 'field 3 is no kind of event (c, u, d, s)' end
  if E[3] ~= 's' and n ~= 8 then return nil, 'a listing event names ' .. (n - 5) / 3 ..
                                             ' listings: 1 expected' end
  if string.find(E[1], '\\n', 1, true) then return nil, 'the webhook id holds a line break' end
  if not (integral(E[2]) and integral(E[5])) then
    return nil, 'received at (field 2) or occurred at (field 5) is not a whole number'
  end
  for i = 7, n, 3 do
    if not integral(E[i]) then
      return nil, 'the version in field ' .. i .. ' is not a whole number'
    end
  end
  return E
end

-- Why a fold failed, as text: a Redis command's error is a table.
local function reason(err)
  if type(err) == 'table' then return tostring(err.err or cjson.encode(err)) end
  return tostring(err)
end

-- One entry; how many listings it changed.
local function fold_entry(decoded, redelivery)
  begin(decoded)
  if not redelivery then return fold() end
  -- The listings a redelivery names are the ones the first delivery named.
  for i = 6, #A, 3 do trace(A[i], A[i + 1], 'd') end
  return 0
end

-- An entry the fold cannot handle goes aside, with why, to lb:inbox:dead (a JSON line: error,
-- at, attempts; then the entry as it was), and the inbox goes on. An operator retries it (back
-- to the inbox's head, its attempts kept in lb:inbox:retries) or discards it.
local aside = {}
local function set_aside(entry, why)
  local clock = redis.call('TIME')
  local sum = redis.sha1hex(entry)
  local attempts = 1 + (tonumber(redis.call('HGET', RETRIES, sum)) or 0)
  redis.call('HDEL', RETRIES, sum)
  redis.call('RPUSH', DEAD, cjson.encode({
    error = why, attempts = attempts,
    at = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000),
  }) .. '\\n' .. entry)
  aside[#aside + 1] = why
end

local folded, listings, applied, taken = 0, 0, 0, 0
while taken < max_events and (taken == 0 or listings < max_listings) do
  -- Only what this call folds is read (a snapshot may be a megabyte).
  local entry = redis.call('LPOP', INBOX)
  if not entry then break end
  taken = taken + 1
  local redelivery = string.sub(entry, 1, 1) == DUPLICATE
  local decoded, why = readable(redelivery and string.sub(entry, 2) or entry)
  if decoded then
    made = {}
    local ok, result = pcall(fold_entry, decoded, redelivery)
    if ok then
      applied, folded = applied + result, folded + 1
    else
      -- Redis keeps what a failing script wrote: what this entry wrote before its error
      -- (a shape checked above leaves only an error of Redis's own, such as a key of the
      -- wrong type) stays, its groups marked due below with the rest; its counts go.
      uncount()
      why = reason(result)
    end
    listings = listings + (#decoded - 5) / 3
  end
  if why then set_aside(entry, why) end
end
settle()
purge()
return {folded, applied, redis.call('LLEN', INBOX), unpack(aside)}
"""

# What the accept script puts before a redelivery's entry (no msgpack array starts with it).
DUPLICATE = b"D"
# One fold call removes at most this many expired tombstones (~5 µs each).
PURGE_TOMBSTONES = 200

# Settings are known only when the store is built; everything else is spliced in now, so a
# misspelt name fails the import.
_SETTINGS = ("TTL", "WINDOW", "MAXWAIT", "TRACE_TTL", "HORIZON")
_NAMES: dict[str, LuaValue] = {
    "SEEN": k.SEEN, "LISTING": k.LISTING, "MEMBERS": k.MEMBERS, "GROUPS": k.GROUPS,
    "PENDING": k.PENDING, "DUE": k.DUE, "STATS": k.STATS, "STATS_TTL": k.STATS_TTL_S,
    "LISTING_FIELDS": k.LISTING_FIELDS, "CAUSE_DELETED": k.CAUSE_DELETED,
    "CAUSE_SNAPSHOT": k.CAUSE_SNAPSHOT, "TRACE": k.TRACE, "TRACE_MAXLEN": k.TRACE_MAXLEN,
    "METRICS": k.METRICS, "IDLE": k.GROUP_IDLE_MS, "DIRTY": k.DIRTY, "BODYK": k.BODY,
    "INBOX": k.INBOX, "DUPLICATE": DUPLICATE.decode(), "SETTLED": k.SETTLED,
    "TOMBSTONES": k.TOMBSTONES, "SOURCES": k.LISTING_SOURCES, "DEAD": k.INBOX_DEAD,
    "RETRIES": k.INBOX_RETRIES,
}
ACCEPT = splice(_ACCEPT, {
    **_NAMES, "EVENT_DUPLICATE": counters.WEBHOOK_EVENTS.field("duplicate"),
}, later=_SETTINGS)
FOLD = splice(_FOLD, {
    **_NAMES, "EVENT_ACCEPTED": counters.WEBHOOK_EVENTS.field("accepted"),
    "EVENT_STALE": counters.WEBHOOK_EVENTS.field("stale"), "GRACE": k.TOMBSTONE_GRACE_MS,
    "PURGE": PURGE_TOMBSTONES,
}, later=_SETTINGS)


@dataclass(frozen=True)
class Stored:
    duplicate: bool


class EventStore:
    """Writes accepted events to Redis; the worker side reads the state they fold into. Refuses
    them (``StorageFull``) once Redis nears the ceilings of ``[webhook]`` (bridge/ingest/
    admission.py)."""

    def __init__(self, redis: Redis, url: str, webhook: WebhookSettings,
                 debounce: DebounceSettings,
                 prepare: Callable[[], Awaitable[Durability]] | None = None,
                 trace: TraceSettings | None = None,
                 retention: RetentionSettings | None = None) -> None:
        """``prepare`` runs on every (re)connect of the script client and says what a stored
        event must wait for (``bridge.connections.RedisCheck``)."""
        self._redis = redis
        self._script = ScriptBatcher(url, accept_script(webhook, debounce, trace, retention),
                                     prepare=prepare)
        self._unstored = 0  # events answered 503 and not counted in Redis yet
        self._max_inbox = webhook.max_inbox_events
        self.memory = MemoryGauge(redis, webhook.max_memory_share)

    async def put(self, webhook_id: str, event: ValidEvent, now_ms: int) -> Stored:
        if self.memory.full():
            raise StorageFull(f"Redis's used_memory has reached {self.memory.ceiling:.0%} of "
                              "its maxmemory ([webhook] max_memory_share): events wait until "
                              "the workers fold the inbox")
        arguments = script_arguments(webhook_id, now_ms, event, self._max_inbox)
        try:
            status, _ = await self._script.call_packed(4, arguments)
        except (RedisError, OSError):
            self._unstored += 1  # the webhook answers 503; counted once Redis is back
            raise
        if status == 2:
            raise StorageFull(f"the inbox holds [webhook] max_inbox_events "
                              f"({self._max_inbox}) events: events wait until the workers "
                              "fold it")
        self.memory.stored(len(arguments))
        if self._unstored:
            await self._count_unstored()
        return Stored(duplicate=status == 0)

    async def aclose(self) -> None:
        await self.memory.aclose()
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


def settings_values(webhook: WebhookSettings, debounce: DebounceSettings,
                    trace: TraceSettings | None = None,
                    retention: RetentionSettings | None = None) -> dict[str, LuaValue]:
    trace = trace or TraceSettings()
    retention = retention or RetentionSettings()
    return {"TTL": webhook.dedupe_ttl_seconds, "WINDOW": debounce.window_ms,
            "MAXWAIT": debounce.max_wait_ms, "TRACE_TTL": trace.retention_ms,
            "HORIZON": retention.horizon_ms}


def accept_script(webhook: WebhookSettings, debounce: DebounceSettings,
                  trace: TraceSettings | None = None,
                  retention: RetentionSettings | None = None) -> str:
    return splice(ACCEPT, settings_values(webhook, debounce, trace, retention))


def fold_script(webhook: WebhookSettings, debounce: DebounceSettings,
                trace: TraceSettings | None = None,
                retention: RetentionSettings | None = None) -> str:
    return splice(FOLD, settings_values(webhook, debounce, trace, retention))


# The entry's kind: the event's type, in a letter (created and updated are both upserts).
_KIND = {"listing.created": "c", "listing.updated": "u", "listing.deleted": "d",
         "group.snapshot": "s"}
# msgpack, the one structured format both Python and Redis's Lua (cmsgpack) read; every value a
# string (cmsgpack reads no binary type), as the scripts compare them.
_ENTRY = msgspec.msgpack.Encoder()
_STR32 = struct.Struct(">BI").pack
_READ = msgspec.msgpack.Decoder(list[str])
_ARGS = b"$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"


def entry(webhook_id: str, now_ms: int, event: ValidEvent) -> bytes:
    """The event as the inbox keeps it: webhook id, received at, kind, group, occurred_at
    (ms), then ref, version (-1: none), body for each listing."""
    fields: list[str | msgspec.Raw] = [webhook_id, str(now_ms), _KIND[event.type], event.group,
                                       str(event.occurred_ms)]
    for ref, version, body in event.listings:
        fields += (ref, str(version), _as_str(body))
    return _ENTRY.encode(fields)


def _as_str(utf8: bytes) -> msgspec.Raw:
    """Validated UTF-8 as a msgpack str, as it is: decoding it to write it back costs ~1.3 µs
    a listing (a str32 header is valid msgpack at any length)."""
    return msgspec.Raw(_STR32(0xDB, len(utf8)) + utf8)


def received_at(stored: bytes) -> int:
    """When the webhook received an inbox entry (a redelivery's too)."""
    fields = _READ.decode(stored[1:] if stored[:1] == DUPLICATE else stored)
    return int(fields[1])


def script_arguments(webhook_id: str, now_ms: int, event: ValidEvent,
                     max_inbox: int | None = None) -> bytes:
    """The accept script's ARGV, packed as RESP bulk strings: webhook id, received at, entry,
    and the inbox's ceiling when given. Packed in one format: the webhook's hot path."""
    webhook, now, packed = webhook_id.encode(), b"%d" % now_ms, entry(webhook_id, now_ms, event)
    args = _ARGS % (len(webhook), webhook, len(now), now, len(packed), packed)
    if max_inbox is None:
        return args
    limit = b"%d" % max_inbox
    return b"%s$%d\r\n%s\r\n" % (args, len(limit), limit)
