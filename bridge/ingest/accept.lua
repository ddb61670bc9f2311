-- accept: the webhook's script (bridge/ingest/store.py), the only work in a request's round
-- trip: dedupe by webhook id, then keep the event in the inbox, in arrival order, for the
-- workers to fold (bridge/ingest/inbox.py). Sent by bridge/ingest/script_client.py.
-- KEYS[1] seen: lb:seen:<webhook id>, the dedupe marker
-- KEYS[2] inbox: lb:inbox
-- KEYS[3] stats: lb:stats:<minute of receipt>
-- KEYS[4] metrics: lb:metrics
-- KEYS[5...] wake: lb:wake (deployment-wide: the tenants with work for the schedulers); on a
--   Redis Cluster it lives in another slot, so none is given: the webhook wakes the tenant
--   apart, once the event is durable (bridge/ingest/store.py)
-- ARGV[1] received at (ms)
-- ARGV[2] the event's inbox entry (bridge.ingest.store.entry)
-- ARGV[3] the dedupe marker's lifetime (s): [webhook] dedupe_ttl_seconds
-- ARGV[4] the tenant (whose keys KEYS[1..4] are)
-- ARGV[5] at most how many events the inbox may hold (optional: absent, no limit)
-- Returns: {1, 0} stored, {0, 0} duplicate, {2, 0} refused: the inbox is full
local SEEN, INBOX, STATS, METRICS, WAKE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
-- What a redelivery's entry starts with (no msgpack array does): only its story is told.
local DUPLICATE = __DUPLICATE__

-- Counted per minute of receipt (the first count of a minute sets the expiry), and since ever
-- by outcome, for Prometheus (bridge/counters.py). A stored event is counted by the fold.
local function duplicate()
  if redis.call('HINCRBY', STATS, 'duplicate', 1) == 1 then
    redis.call('EXPIRE', STATS, __STATS_TTL__)
  end
  redis.call('HINCRBY', METRICS, __EVENT_DUPLICATE__, 1)
end

-- A full inbox refuses a new event before its dedupe marker is set (its retry must not pass
-- for a duplicate); a redelivery of a stored one is answered as such, its story left untold.
-- Whatever the outcome the tenant's inbox may hold work: its turn is due now (score 0), in the
-- same step as the write, so no stored event waits for a turn nobody gave it.
if WAKE then redis.call('ZADD', WAKE, 0, ARGV[4]) end
local limit = tonumber(ARGV[5])
if limit and redis.call('LLEN', INBOX) >= limit then
  if redis.call('EXISTS', SEEN) == 0 then return {2, 0} end
  duplicate()
  return {0, 0}
end
if not redis.call('SET', SEEN, ARGV[1], 'NX', 'EX', ARGV[3]) then
  duplicate()
  -- Into the inbox too, marked, so its listings' stories tell it after the first delivery:
  -- without its bodies (a snapshot's may be a megabyte), which no story tells.
  local story = cmsgpack.unpack(ARGV[2])
  for i = 8, #story, 3 do story[i] = '' end
  redis.call('RPUSH', INBOX, DUPLICATE .. cmsgpack.pack(story))
  return {0, 0}
end
-- Counted as received by the fold, in the minute it was received: one call less here.
redis.call('RPUSH', INBOX, ARGV[2])
return {1, 0}
