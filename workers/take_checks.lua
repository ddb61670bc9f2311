-- A target's due checks, as many as may start: not one already running, at most `cap` running
-- at once. Each taken group is moved `retake` on (a lost job comes back) and counted as running
-- until its job takes the lock; returned with that score, its ticket.
-- KEYS[1] due: lb:reconcile:due:<target>
-- KEYS[2] running: lb:reconcile:running:<target>
-- ARGV[1] now (ms)
-- ARGV[2] retake (ms)
-- ARGV[3] how long a taken check counts as running before its job takes the lock (ms)
-- ARGV[4] cap: how many checks may run on the target at once
-- Returns: {group, ticket, group, ticket, ...}
local due, running = KEYS[1], KEYS[2]
local now, retake, start, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', running, '-inf', now)
local busy = redis.call('ZCARD', running)
if busy >= cap then return {} end
local taken = {}
for _, g in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, cap)) do
  if busy < cap and not redis.call('ZSCORE', running, g) then
    busy = busy + 1
    redis.call('ZADD', due, 'XX', now + retake, g)
    redis.call('ZADD', running, now + start, g)
    taken[#taken + 1] = g
    taken[#taken + 1] = tostring(now + retake)
  end
end
return taken
