-- Renew a sender's lease on its target. The target's due time stays past the lease, so the
-- scheduler does not start sends that would only find it held.
-- KEYS[1] sender: lb:sender:<target>
-- KEYS[2] senders: lb:senders
-- ARGV[1] target
-- ARGV[2] token
-- ARGV[3] lease (ms)
-- ARGV[4] now (ms)
-- Returns: 1 (renewed), 0 (not held)
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], 'XX', 'GT', tonumber(ARGV[4]) + tonumber(ARGV[3]), ARGV[1])
return 1
