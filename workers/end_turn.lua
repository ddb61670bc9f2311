-- end_turn: a tenant's turn is over; it is next due at `next` (none: not before a change wakes
-- it). Only the tenant's latest turn may say so (its token: two turns taken in the same
-- millisecond share a ticket, and another turn's end may set the very score of this one's),
-- and only if nothing woke the tenant during the turn (its score is still the ticket: a
-- webhook, a job's end or an operator set it to 0, which stands).
-- KEYS[1] wake: lb:{wake}
-- KEYS[2] turns: lb:{wake}:turns
-- ARGV[1] the tenant
-- ARGV[2] the ticket: the score take_turns gave it
-- ARGV[3] when it is next due (ms), or -1: nothing scheduled
-- ARGV[4] the turn's token (take_turns' ARGV[4])
-- Returns: 1 set, 0 left: a later turn holds the tenant, or a wake-up set it
local wake, turns, tenant, ticket, nxt = KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('HGET', turns, tenant) ~= ARGV[4] .. ':' .. tenant then return 0 end
redis.call('HDEL', turns, tenant)
local score = redis.call('ZSCORE', wake, tenant)
if not score or tonumber(score) ~= tonumber(ticket) then return 0 end
if nxt < 0 then
  redis.call('ZREM', wake, tenant)
else
  redis.call('ZADD', wake, nxt, tenant)
end
return 1
