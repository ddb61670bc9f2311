-- End a flush: what its targets settled is recorded, and the group is due again when its
-- changes that arrived meanwhile say (the debounce rule, ../group_state.lua), or when a target
-- asked, or not at all. A change every target has settled leaves lb:dirty. The group's
-- scheduling keys get one lifetime.
-- KEYS[1] lease: lb:lease:<group>
-- KEYS[2] flushing: lb:flushing
-- KEYS[3] settled: lb:settled:<group>
-- KEYS[4] dirty: lb:dirty:<group>
-- KEYS[5] pending: lb:pending:<group>
-- KEYS[6] due: lb:due
-- ARGV[1] group
-- ARGV[2] token
-- ARGV[3] the claimed seq
-- ARGV[4] when the group is next due (-1: not)
-- ARGV[5] now (ms)
-- ARGV[6] debounce window (ms)
-- ARGV[7] debounce max wait (ms)
-- ARGV[8] idle: the lifetime of a group's keys (ms)
-- ARGV[9] JSON [targets whose turn settled every change up to the claimed seq: never a later
-- one, whose content the flush did not plan]
-- ARGV[10] JSON [every target]
-- Returns: 1 (no new changes), 0 (changes arrived during the flush), -1 (not held: nothing done)
--!include ../group_state.lua
local g, token, claimed = ARGV[1], ARGV[2], ARGV[3]
local next_due, now = tonumber(ARGV[4]), tonumber(ARGV[5])
local window, maxwait, idle = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local lease, due_key = KEYS[1], KEYS[6]
local gk = {pending = KEYS[5], dirty = KEYS[4], settled = KEYS[3]}
if redis.call('GET', lease) ~= token then return -1 end
redis.call('DEL', lease)
redis.call('ZREM', KEYS[2], g)
settle_up_to(gk, cjson.decode(ARGV[9]), claimed)
lifetime(gk, idle)
local floor = settled_floor(gk, cjson.decode(ARGV[10]))
if floor then drop_settled(gk, floor) end
local seq = redis.call('HGET', gk.pending, 'seq') or '0'
if seq ~= claimed then
  -- Changes arrived during the flush: due when their debounce says (a bare seq bump, as an
  -- operator's action makes, means now), or sooner if a target asked for that.
  local due = changes_due(gk, now, window, maxwait)
  if next_due >= 0 then due = math.min(due, next_due) end
  make_due(due_key, g, due)
  return 0
end
if next_due >= 0 then
  make_due(due_key, g, next_due)
else
  make_not_due(due_key, g)
end
return 1
