-- Renew a flush's lease on its group if it still holds it; the group stays due past it.
-- KEYS[1] lease: lb:lease:<group>
-- KEYS[2] due: lb:due
-- KEYS[3] flushing: lb:flushing
-- ARGV[1] group
-- ARGV[2] token
-- ARGV[3] now (ms)
-- ARGV[4] lease (ms)
-- Returns: 1 (renewed), 0 (not held)
local g, token, now, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('GET', KEYS[1]) ~= token then return 0 end
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('ZADD', KEYS[2], 'XX', 'GT', now + lease, g)
redis.call('ZADD', KEYS[3], now + lease, g)
return 1
