-- A failed check, written only while its lock is still its own: the failure kept, the group
-- due again after a backoff that doubles with each failure (never beyond one interval); the
-- lock released.
-- KEYS[1] lock: lb:reconcile:lock:<target>:<group>
-- KEYS[2] due: lb:reconcile:due:<target>
-- KEYS[3] running: lb:reconcile:running:<target>
-- KEYS[4] failed: lb:reconcile:failed:<target>
-- ARGV[1] the check's token
-- ARGV[2] group
-- ARGV[3] now (ms)
-- ARGV[4] the pass's interval (ms)
-- ARGV[5] the error
-- Returns: 0 (the lock is not this check's: nothing written), else the delay before the
-- group's next try (ms)
local lock, due, running, failed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, group, now, interval = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('GET', lock) ~= token then return 0 end
local old = redis.call('HGET', failed, group)
local attempts = 1
if old then attempts = (tonumber(cjson.decode(old)['attempts']) or 0) + 1 end
local delay = math.min(interval, __FIRST__ * 2 ^ math.min(attempts - 1, 20), __MAX__)
redis.call('HSET', failed, group, cjson.encode({attempts = attempts, error = ARGV[5], at = now}))
redis.call('ZADD', due, now + delay, group)
redis.call('DEL', lock)
redis.call('ZREM', running, group)
return delay
