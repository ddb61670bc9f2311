-- End a flush: what its targets settled is recorded, and the group is due again when its
-- changes that arrived meanwhile say (the debounce rule, ../debounce.lua), or when a target
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
--!include ../debounce.lua
local g, token, claimed = ARGV[1], ARGV[2], ARGV[3]
local next_due, now = tonumber(ARGV[4]), tonumber(ARGV[5])
local window, maxwait, idle = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local lease, sk, dk, pk, due_key = KEYS[1], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if redis.call('GET', lease) ~= token then return -1 end
redis.call('DEL', lease)
redis.call('ZREM', KEYS[2], g)
for _, t in ipairs(cjson.decode(ARGV[9])) do
  if (tonumber(redis.call('HGET', sk, t)) or -1) < tonumber(claimed) then
    redis.call('HSET', sk, t, claimed)
  end
end
for _, key in ipairs({sk, dk, pk}) do redis.call('PEXPIRE', key, idle) end
local floor = nil
for _, t in ipairs(cjson.decode(ARGV[10])) do
  local value = tonumber(redis.call('HGET', sk, t))
  if not value then floor = nil break end
  if not floor or value < floor then floor = value end
end
if floor then
  local flat = redis.call('HGETALL', dk)
  for i = 1, #flat, 2 do
    if tonumber(flat[i + 1]) <= floor then redis.call('HDEL', dk, flat[i]) end
  end
end
local seq = redis.call('HGET', pk, 'seq') or '0'
if seq ~= claimed then
  -- Changes arrived during the flush: due when their debounce says (a bare seq bump, as an
  -- operator's action makes, means now), or sooner if a target asked for that.
  local times = redis.call('HMGET', pk, 'first', 'last')
  local first, last = tonumber(times[1]), tonumber(times[2])
  local due = now
  if first then due = due_at(first, last, window, maxwait) end
  if next_due >= 0 then due = math.min(due, next_due) end
  redis.call('ZADD', due_key, due, g)
  return 0
end
if next_due >= 0 then
  redis.call('ZADD', due_key, next_due, g)
else
  redis.call('ZREM', due_key, g)
end
return 1
