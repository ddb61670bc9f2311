-- Renews a group's check lock, if still the check's own, and its place among running checks.
-- KEYS[1] lock: lb:reconcile:lock:<target>:<group>
-- KEYS[2] running: lb:reconcile:running:<target>
-- ARGV[1] the check's token
-- ARGV[2] group
-- ARGV[3] now (ms)
-- ARGV[4] the lock's lifetime (ms)
-- Returns: 1 (renewed), or 0 when the lock is not the check's any more
local lock, running, token = KEYS[1], KEYS[2], ARGV[1]
local group, now, ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('GET', lock) ~= token then return 0 end
redis.call('PEXPIRE', lock, ttl)
redis.call('ZADD', running, now + ttl, group)
return 1
