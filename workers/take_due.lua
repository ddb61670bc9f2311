-- Takes what is due from a schedule (lb:due: groups to flush; lb:senders: outboxes to send):
-- each taken member's score is moved on a little, atomically, so the other workers'
-- schedulers do not take it again meanwhile.
-- KEYS[1] due: lb:due or lb:senders
-- ARGV[1] now (ms)
-- ARGV[2] retry (ms): when a taken member is due again unless its job takes it on first
-- ARGV[3] how many to take at most
-- Returns: the members taken
local due, now, retry, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local groups = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)
for _, g in ipairs(groups) do redis.call('ZADD', due, 'XX', now + retry, g) end
return groups
