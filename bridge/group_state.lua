-- fragment: a group's scheduling state, owned here: lb:pending:<g> (first, last, seq),
-- lb:dirty:<g>, lb:settled:<g>, their shared lifetime, and the group's entry in lb:due. Every
-- script that writes them (ingest/fold.lua, delivery/accepted.lua's includers, claim.lua,
-- finish.lua, mark_due.lua) does so through these functions, and each rule is stated once. A
-- group's keys come as a table {pending, dirty, settled} (group_keys). A script uses only some.
-- luacheck: push ignore 211

-- The debounce rule (the fold marks a group due with it; a flush that finishes with changes that
-- arrived meanwhile, too). A group with changes is due ``window`` after its last change, and at
-- the latest ``maxwait`` after the first change since its last claim.
local function due_at(first, last, window, maxwait)
  return math.min((last or first) + window, first + maxwait)
end

-- The keys of group g, from the prefixes {pending, dirty, settled} (a script gets them in ARGV).
local function group_keys(prefixes, g)
  return {pending = prefixes.pending .. g, dirty = prefixes.dirty .. g,
          settled = prefixes.settled .. g}
end

-- The counter rule: a group's change counter (seq) never goes backwards. Created afresh
-- (lb:pending expired, or was lost), it starts above every seq the group still records: a
-- target's settled seq (lb:settled), a listing's unsettled change (lb:dirty); never back to or
-- below one a target settled, which would hide the change from claims. The highest of them:
local function recorded(gk)
  local top = 0
  for _, key in ipairs({gk.settled, gk.dirty}) do
    for _, value in ipairs(redis.call('HVALS', key)) do
      top = math.max(top, tonumber(value) or 0)
    end
  end
  return top
end

-- The shared lifetime: pending, dirty and settled are renewed together, ``idle`` past the last
-- change (each fold batch that changes the group) or flush (its finish).
local function lifetime(gk, idle)
  for _, key in ipairs({gk.pending, gk.dirty, gk.settled}) do
    redis.call('PEXPIRE', key, idle)
  end
end

-- A single fresh change of the group (not the fold's: it counts a batch's at once, from
-- recorded()): its next seq.
local function bump(gk)
  if redis.call('HEXISTS', gk.pending, 'seq') == 1 then
    return redis.call('HINCRBY', gk.pending, 'seq', 1)
  end
  local top = recorded(gk)
  redis.call('HSET', gk.pending, 'seq', top + 1)
  return top + 1
end

-- The listing ref changed at the group's change counter ``seq``: flushes plan it until every
-- target has settled that change (bridge/delivery/claims.py).
local function mark_dirty(gk, ref, seq)
  redis.call('HSET', gk.dirty, ref, seq)
end

-- Group g's flush is due at ``at`` (lb:due is the key ``due``); unless sooner; not before.
local function make_due(due_key, g, at)
  redis.call('ZADD', due_key, at, g)
end
local function make_due_by(due_key, g, at)
  redis.call('ZADD', due_key, 'LT', at, g)
end
local function make_due_not_before(due_key, g, at)
  redis.call('ZADD', due_key, 'GT', at, g)
end
-- Group g is not due at all.
local function make_not_due(due_key, g)
  redis.call('ZREM', due_key, g)
end

-- The fold's changes of group g (once per batch): ``mark`` {first, last, seq, burst (a burst
-- began: first is new)}; ``at`` {due (the key), idle, window, maxwait}. The group's counter and
-- debounce marks, its keys' lifetime, and when it is due.
local function record_changes(gk, g, mark, at)
  if mark.burst then
    redis.call('HSET', gk.pending, 'first', mark.first, 'last', mark.last, 'seq', mark.seq)
  else
    redis.call('HSET', gk.pending, 'last', mark.last, 'seq', mark.seq)
  end
  lifetime(gk, at.idle)
  make_due(at.due, g, due_at(mark.first, mark.last, at.window, at.maxwait))
end

-- A claim takes the group's changes: its seq ('0': none ever) and first ('': none since the last
-- claim), and clears first, so new changes start a new debounce.
local function take_changes(gk)
  local seq = redis.call('HGET', gk.pending, 'seq') or '0'
  local first = redis.call('HGET', gk.pending, 'first') or ''
  redis.call('HDEL', gk.pending, 'first')
  return seq, first
end

-- A finish: each of ``targets`` settled every change up to seq ``claimed`` (never lowered).
local function settle_up_to(gk, targets, claimed)
  for _, t in ipairs(targets) do
    if (tonumber(redis.call('HGET', gk.settled, t)) or -1) < tonumber(claimed) then
      redis.call('HSET', gk.settled, t, claimed)
    end
  end
end

-- The least seq settled over ``targets``; nil when one has none recorded.
local function settled_floor(gk, targets)
  local floor = nil
  for _, t in ipairs(targets) do
    local value = tonumber(redis.call('HGET', gk.settled, t))
    if not value then return nil end
    if not floor or value < floor then floor = value end
  end
  return floor
end

-- A change every target has settled (at or below ``floor``) leaves lb:dirty.
local function drop_settled(gk, floor)
  local flat = redis.call('HGETALL', gk.dirty)
  for i = 1, #flat, 2 do
    if tonumber(flat[i + 1]) <= floor then redis.call('HDEL', gk.dirty, flat[i]) end
  end
end

-- When changes recorded in pending since the last claim are due (the debounce rule): a bare seq
-- bump, as an operator's action makes (no first), means ``now``.
local function changes_due(gk, now, window, maxwait)
  local times = redis.call('HMGET', gk.pending, 'first', 'last')
  local first, last = tonumber(times[1]), tonumber(times[2])
  if first then return due_at(first, last, window, maxwait) end
  return now
end
-- luacheck: pop
