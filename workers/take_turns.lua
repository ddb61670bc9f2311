-- take_turns: the tenants whose turn is due (lb:{wake}: tenant -> when it next has work; 0: now),
-- each moved `lease` on and given this turn's token, atomically, so the other workers'
-- schedulers leave it alone meanwhile; the turn ends with end_turn.lua, which sets when the
-- tenant is due next.
-- KEYS[1] wake: lb:{wake}
-- KEYS[2] turns: lb:{wake}:turns (tenant -> the token of its latest turn)
-- ARGV[1] now (ms)
-- ARGV[2] lease (ms): a turn not ended by then (its worker died) is taken again
-- ARGV[3] how many to take at most
-- ARGV[4] this tick's token (unique): each tenant's turn is "<token>:<tenant>"
-- Returns: the tenants taken (each now at score now + lease, its turn's ticket)
local wake, turns, now, lease = KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2])
local tenants = redis.call('ZRANGEBYSCORE', wake, '-inf', now, 'LIMIT', 0, ARGV[3])
for _, t in ipairs(tenants) do
  redis.call('ZADD', wake, 'XX', now + lease, t)
  redis.call('HSET', turns, t, ARGV[4] .. ':' .. t)
end
return tenants
