#!lua flags=allow-oom
-- fold: the workers' script (bridge/ingest/inbox.py). Folds the inbox's oldest events, in
-- arrival order, into the desired state, and removes them, in one atomic step: a fold killed
-- midway never ran, and no event is folded twice. Then, inbox empty or not, removes compacted
-- tombstones no event can need any more (``purge``). Every key it touches is named by its
-- caller, which reads first what it needs to know them (fold_head.lua, each listing's group,
-- each snapshot's members); before it takes an entry (LINDEX, then LPOP) it checks that every
-- key folding it will touch was declared (``check``) and, missing one, stops there: the
-- entries folded before stay folded, and it answers which keys were missing, for its caller
-- to read again (another worker may have folded the head meanwhile, or moved a listing). An
-- entry that cannot be folded (its shape is checked before anything is written for it; an
-- error of Redis's own is caught) goes to lb:inbox:dead and the rest is folded: Redis does
-- not undo a failing script's writes, so one left to fail would drop the entries it had
-- popped and the due marks of those it had folded. ``allow-oom`` (Redis >= 7.0, Valkey): a
-- Redis past its maxmemory still lets the fold run, so the inbox it frees can never be what
-- keeps it full (the webhook stops admitting well before, bridge/ingest/admission.py, leaving
-- the room that state takes).
-- KEYS[1] inbox: lb:inbox
-- KEYS[2] due: lb:due
-- KEYS[3] groups: lb:groups
-- KEYS[4] metrics: lb:metrics
-- KEYS[5] tombstones: lb:tombstones
-- KEYS[6] dead: lb:inbox:dead
-- KEYS[7] retries: lb:inbox:retries
-- KEYS[8...] every other key the batch touches, from the prefixes below: each entry's per
--   minute stats, its listings' hash, body and story, the groups' members, pending, dirty and
--   settled (the entry's group, each listing's group now), a snapshot's members' hash and
--   story, the due tombstones' listing hash
-- ARGV[1] at most how many events
-- ARGV[2] at most how many listings (past the first event)
-- ARGV[3] debounce window (ms): [debounce] window_ms
-- ARGV[4] debounce max wait (ms): [debounce] max_wait_ms
-- ARGV[5] horizon (ms): [retention]
-- ARGV[6] a story's lifetime (ms): [trace] retention_days
-- ARGV[7] prefix lb:listing:
-- ARGV[8] prefix lb:body:
-- ARGV[9] prefix lb:trace:
-- ARGV[10] prefix lb:stats:
-- ARGV[11] prefix lb:members:
-- ARGV[12] prefix lb:pending:
-- ARGV[13] prefix lb:dirty:
-- ARGV[14] prefix lb:settled:
-- Returns: {events folded, listing changes they applied, events left, listings taken, {why
--   each entry set aside could not be folded}, {the keys missing, if it stopped for them}}
--!include ../declared.lua
--!include ../group_state.lua
local INBOX, DUE, GROUPS, METRICS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local TOMBSTONES, DEAD, RETRIES = KEYS[5], KEYS[6], KEYS[7]
local max_events, max_listings = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, maxwait = tonumber(ARGV[3]), tonumber(ARGV[4])
local horizon, trace_ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
-- Names are built only from these, and each is checked against KEYS before it is touched.
local LISTING, BODYK, TRACE, STATS = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local MEMBERS, PENDING, DIRTY, SETTLED = ARGV[11], ARGV[12], ARGV[13], ARGV[14]
-- The listing hash's fields (bridge.constants.LISTING_FIELDS), its causes, and
-- the field naming the events that set its state (bridge.constants.LISTING_SOURCES).
local G, V, T, D, AT, CAUSE, FLOOR = __G__, __V__, __T__, __D__, __AT__, __CAUSE__, __FLOOR__
local SOURCES = __SOURCES__
local CAUSE_DELETED, CAUSE_SNAPSHOT = __CAUSE_DELETED__, __CAUSE_SNAPSHOT__
local stats_ttl, idle, TRACE_MAXLEN = __STATS_TTL__, __IDLE__, __TRACE_MAXLEN__
local GRACE, PURGE = __GRACE__, __PURGE__
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


-- What many events of a batch write to the same key is written once, at the end of the batch
-- (``settle``): counters, each group's debounce marks, each story's expiry. The script is
-- atomic and Redis's clock stands still while it runs, so the state it leaves is the one that
-- writing them event by event leaves (tests/ingest/test_inbox.py compares them key by key),
-- for fewer Redis calls per event.
local counts, totals = {}, {}  -- per-minute counters by key and field; cumulative by field
local groups = {}  -- group -> {first, last, seq, burst, keys}, as touch() left it
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

-- The groups' key prefixes (group_keys(), ../group_state.lua), and the batch's settle() marks.
local PREFIXES = {pending = PENDING, dirty = DIRTY, settled = SETTLED}
local MARKS = {due = DUE, idle = idle, window = window, maxwait = maxwait}

-- Mark a group as having changes: trailing window, capped by max wait from its first change.
-- Returns the group's change counter, now. Written to lb:pending and lb:due by settle().
local function touch(g)
  local mark = groups[g]
  if not mark then
    local gk = group_keys(PREFIXES, g)
    local cur = redis.call('HMGET', gk.pending, 'first', 'seq')
    -- No counter: it goes on above every seq still recorded (the counter rule, recorded()).
    mark = {first = tonumber(cur[1]), seq = tonumber(cur[2]) or recorded(gk), keys = gk}
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

-- The listing changed at the group's change counter ``seq`` (mark_dirty()); touch() has seen g.
local function dirty(g, ref, seq)
  mark_dirty(groups[g].keys, ref, seq)
end

-- The batch's deferred writes (see above).
local function settle()
  for g, mark in pairs(groups) do
    -- Counter and debounce marks, the keys' shared lifetime (GROUP_IDLE_MS), when it is due.
    record_changes(mark.keys, g, mark, MARKS)
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
         string.find('\n' .. sources .. '\n', '\n' .. webhook_id .. '\n', 1, true) ~= nil
end
-- SOURCES once this event sets the state: one more at the same time, else this one alone.
local function sources_after(sources, same_time)
  if same_time and sources then return sources .. '\n' .. id end
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
  local oldest = redis.call('LINDEX', INBOX, 0)
  if oldest then
    local ok, at = pcall(received, oldest)
    if not (ok and at) then return end  -- an entry it cannot read: keep every tombstone
    before = math.min(before, at - GRACE)
  end
  for _, ref in ipairs(redis.call('ZRANGEBYSCORE', TOMBSTONES, '-inf',
                                  string.format('(%d', before), 'LIMIT', 0, PURGE)) do
    -- One its caller did not name (due only since it read them) waits for the next call.
    local lk = LISTING .. ref
    if not declared(lk) then return end
    redis.call('ZREM', TOMBSTONES, ref)
    -- Only the tombstone itself: a listing that came back (it has AT) left the set already.
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
  if string.find(E[1], '\n', 1, true) then return nil, 'the webhook id holds a line break' end
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
  }) .. '\n' .. entry)
  aside[#aside + 1] = why
end

-- The keys folding entry E will touch, as Redis holds the state now (earlier entries of the
-- batch folded): the ones its caller did not declare go to ``missing``. Reads only declared
-- keys: a listing's group, a snapshot's group's members. An error of Redis's own here (a key
-- of the wrong type) is met again by the fold, which sets the entry aside with it.
local missing = {}
local function need(name)
  if declared(name) then return true end
  missing[#missing + 1] = name
  return false
end
local function need_group(g)
  need(MEMBERS .. g); need(PENDING .. g); need(DIRTY .. g); need(SETTLED .. g)
end
local function check(E, redelivery)
  for i = 6, #E, 3 do need(TRACE .. E[i]) end
  if redelivery then return end  -- its story only
  local at = tonumber(E[2])
  need(STATS .. math.floor(at / 60000))
  if tonumber(E[5]) < at - horizon then return end  -- stale: its stories and counts only
  need_group(E[4])
  for i = 6, #E, 3 do
    local lk = LISTING .. E[i]
    need(BODYK .. E[i])
    if need(lk) then
      local g = redis.call('HGET', lk, G)
      if g then need_group(g) end  -- where it is: a move or a deletion touches that group
    end
  end
  if E[3] == 's' and declared(MEMBERS .. E[4]) then
    for _, ref in ipairs(redis.call('SMEMBERS', MEMBERS .. E[4])) do
      need(LISTING .. ref); need(TRACE .. ref)
    end
  end
end

local folded, listings, applied, taken = 0, 0, 0, 0
while taken < max_events and (taken == 0 or listings < max_listings) do
  -- Only what this call folds is read (a snapshot may be a megabyte); it leaves the inbox
  -- (LPOP) once its keys are known to be declared, before what it folds into is written.
  local entry = redis.call('LINDEX', INBOX, 0)
  if not entry then break end
  local redelivery = string.sub(entry, 1, 1) == DUPLICATE
  local decoded, why = readable(redelivery and string.sub(entry, 2) or entry)
  if decoded then
    pcall(check, decoded, redelivery)
    if #missing > 0 then break end
  end
  redis.call('LPOP', INBOX)
  taken = taken + 1
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
return {folded, applied, redis.call('LLEN', INBOX), listings, aside, missing}
