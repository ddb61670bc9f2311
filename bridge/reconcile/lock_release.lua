-- Releases a group's check lock, if still the check's own.
-- KEYS[1] lock: lb:reconcile:lock:<target>:<group>
-- KEYS[2] running: lb:reconcile:running:<target>
-- ARGV[1] the check's token
-- ARGV[2] group
-- Returns: 1 (released), or 0 when the lock is not the check's any more
local lock, running, token, group = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
if redis.call('GET', lock) ~= token then return 0 end
redis.call('DEL', lock)
redis.call('ZREM', running, group)
return 1
