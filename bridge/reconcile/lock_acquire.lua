-- Takes a group's check lock, and counts the check as running on its target until it lapses.
-- KEYS[1] lock: lb:reconcile:lock:<target>:<group>
-- KEYS[2] running: lb:reconcile:running:<target>
-- ARGV[1] the check's token
-- ARGV[2] group
-- ARGV[3] now (ms)
-- ARGV[4] the lock's lifetime (ms)
-- Returns: 1 (taken), or 0 while another check holds it
local lock, running, token = KEYS[1], KEYS[2], ARGV[1]
local group, now, ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if not redis.call('SET', lock, token, 'NX', 'PX', ttl) then return 0 end
redis.call('ZADD', running, now + ttl, group)
return 1
