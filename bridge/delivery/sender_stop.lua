-- Let go of the target and say when its outbox is next due: never sooner than not_before, nor
-- before its earliest ready write not taken for a PUT (unless a bulk is in flight: that goes
-- at not_before); while PUTs the sender took wait to go again, no later than the earliest of
-- them (never sooner than not_before); not at all when the outbox is empty.
-- KEYS[1] sender: lb:sender:<target>
-- KEYS[2] batch: lb:outbox:batch:<target>
-- KEYS[3] outbox: lb:outbox:<target>
-- KEYS[4] ready: lb:outbox:ready:<target>
-- KEYS[5] senders: lb:senders
-- KEYS[6] puts: lb:outbox:puts:<target>
-- ARGV[1] target
-- ARGV[2] token
-- ARGV[3] not_before (ms)
-- ARGV[4] when the earliest PUT the sender took may go again (ms; '' or absent: not known)
-- Returns: the due time, -1 (empty), or -2 (not held any more)
local target, token, not_before = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('GET', KEYS[1]) ~= token then return -2 end
redis.call('DEL', KEYS[1])
local batch = redis.call('EXISTS', KEYS[2]) == 1
local puts = redis.call('HLEN', KEYS[6])
if redis.call('HLEN', KEYS[3]) == 0 and not batch and puts == 0 then
  redis.call('ZREM', KEYS[5], target)
  return -1
end
local due
if batch then
  due = not_before
else
  -- At most `puts` of the first ones are taken for PUTs.
  local first = redis.call('ZRANGE', KEYS[4], 0, puts, 'WITHSCORES')
  for i = 1, #first, 2 do
    if redis.call('HEXISTS', KEYS[6], first[i]) == 0 then
      due = math.max(not_before, tonumber(first[i + 1]))
      break
    end
  end
end
if puts > 0 then
  local again = math.max(not_before, tonumber(ARGV[4] or '') or not_before)
  due = due and math.min(due, again) or again
end
due = due or not_before
redis.call('ZADD', KEYS[5], due, target)
return due
