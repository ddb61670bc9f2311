-- next_due: when a tenant next has work, read from its own keys in one call (the scheduler's
-- look before and after a tenant's turn).
-- KEYS[1] inbox: lb:inbox
-- KEYS[2] due: lb:due
-- KEYS[3] senders: lb:senders
-- KEYS[4] tombstones: lb:tombstones
-- KEYS[5...] per target, in ARGV's order: lb:reconcile:due:<target>, then lb:target:<target>
-- ARGV[1...] the targets whose checks count (reconciliation on)
-- Returns: {events waiting, first due group, first due outbox, first tombstone expiry,
--   first due check of a target not paused}, each -1 when there is none
local function first(key)
  local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if head[2] then return tonumber(head[2]) end
  return -1
end
local check = -1
for i = 1, #ARGV do
  if redis.call('HEXISTS', KEYS[4 + 2 * i], 'paused') == 0 then
    local at = first(KEYS[3 + 2 * i])
    if at >= 0 and (check < 0 or at < check) then check = at end
  end
end
-- An inbox the fold cannot read (not a list) counts as waiting: the fold meets it and says so.
local waiting = redis.pcall('LLEN', KEYS[1])
if type(waiting) ~= 'number' then waiting = 1 end
return {waiting, first(KEYS[2]), first(KEYS[3]), first(KEYS[4]), check}
