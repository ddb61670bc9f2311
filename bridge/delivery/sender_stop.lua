-- Let go of the target and say when its outbox is next due: never sooner than not_before, nor
-- before its earliest ready write (unless a bulk or a PUT is in flight: that goes at
-- not_before); not at all when the outbox is empty.
-- KEYS[1] sender: lb:sender:<target>
-- KEYS[2] batch: lb:outbox:batch:<target>
-- KEYS[3] outbox: lb:outbox:<target>
-- KEYS[4] ready: lb:outbox:ready:<target>
-- KEYS[5] senders: lb:senders
-- KEYS[6] puts: lb:outbox:puts:<target>
-- ARGV[1] target
-- ARGV[2] token
-- ARGV[3] not_before (ms)
-- Returns: the due time, -1 (empty), or -2 (not held any more)
local target, token, not_before = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('GET', KEYS[1]) ~= token then return -2 end
redis.call('DEL', KEYS[1])
local in_flight = redis.call('EXISTS', KEYS[2]) == 1 or redis.call('HLEN', KEYS[6]) > 0
if redis.call('HLEN', KEYS[3]) == 0 and not in_flight then
  redis.call('ZREM', KEYS[5], target)
  return -1
end
local due = not_before
if not in_flight then
  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  if first[2] then due = math.max(due, tonumber(first[2])) end
end
redis.call('ZADD', KEYS[5], due, target)
return due
