-- Checks the epoch against the server's identity (its run_id, from INFO). No epoch on record:
-- a first start, or a Redis that lost everything (nothing here tells them apart): begin one.
-- Another server than the one the epoch was checked against: state may be lost, begin one.
-- Atomic, so workers starting together agree on one epoch.
-- KEYS[1] epoch: lb:epoch
-- KEYS[2] witness: lb:witness
-- ARGV[1] a fresh epoch id, used if one begins
-- Returns: {epoch, cause} ("first" or "lost"), and when this call began a lost epoch, also
-- the run_id now and the one seen before ('' if none)
local epoch_key, witness = KEYS[1], KEYS[2]
local fresh = ARGV[1]
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or ''
local epoch = redis.call('GET', epoch_key)
local seen = redis.call('HGET', witness, 'run_id')
if not epoch then
  redis.call('SET', epoch_key, fresh)
  redis.call('HSET', witness, 'run_id', run_id, 'cause', 'first')
  return {fresh, 'first'}
end
if seen ~= run_id then
  redis.call('SET', epoch_key, fresh)
  redis.call('HSET', witness, 'run_id', run_id, 'cause', 'lost')
  return {fresh, 'lost', run_id, seen or ''}
end
return {epoch, redis.call('HGET', witness, 'cause') or 'first'}
