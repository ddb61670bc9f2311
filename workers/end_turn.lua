-- end_turn: a tenant's turn is over; it is next due at `next` (none: not before a change wakes
-- it), unless something woke it during the turn (its score is no longer the turn's ticket: a
-- webhook, a job's end or an operator set it to 0), which stands.
-- KEYS[1] wake: lb:wake
-- ARGV[1] the tenant
-- ARGV[2] the ticket: the score take_turns gave it
-- ARGV[3] when it is next due (ms), or -1: nothing scheduled
-- Returns: 1 set, 0 left as a wake-up set it
local wake, tenant, ticket, nxt = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local score = redis.call('ZSCORE', wake, tenant)
if not score or tonumber(score) ~= tonumber(ticket) then return 0 end
if nxt < 0 then
  redis.call('ZREM', wake, tenant)
else
  redis.call('ZADD', wake, nxt, tenant)
end
return 1
