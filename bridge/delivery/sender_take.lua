-- Take a target's outbox for one sender, unless another holds it.
-- KEYS[1] sender: lb:sender:<target>
-- KEYS[2] fence: lb:fence
-- ARGV[1] lease (ms)
-- Returns: {token, 0}, or {0, pttl} when another sender holds it
local held = redis.call('PTTL', KEYS[1])
if held > 0 then return {0, held} end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', tonumber(ARGV[1]))
return {token, 0}
