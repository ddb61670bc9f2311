-- Claim a group's flush: its pending changes (clears `first`, so new changes start a new
-- debounce), its lease (a fresh fencing token), and a consistent snapshot of its members'
-- desired state. While another flush holds the lease, the group is made due when that lease
-- would lapse, and nothing else happens.
-- KEYS[1] lease: lb:lease:<group>
-- KEYS[2] fence: lb:fence
-- KEYS[3] pending: lb:pending:<group>
-- KEYS[4] due: lb:due
-- KEYS[5] flushing: lb:flushing
-- KEYS[6] settled: lb:settled:<group>
-- KEYS[7] dirty: lb:dirty:<group>
-- KEYS[8] members: lb:members:<group>
-- KEYS[9...] member: lb:listing:<ref> and lb:body:<ref> of each member the caller read
-- ARGV[1] group
-- ARGV[2] now (ms)
-- ARGV[3] lease (ms)
-- ARGV[4] the prefix of a listing's hash (lb:listing:)
-- ARGV[5] the prefix of a listing's body (lb:body:)
-- ARGV[6...] targets
-- Returns: {0, pttl} when another flush holds the group; {'missing', key...} when a member's
-- keys were not declared (nothing written); else the token, seq, first, how many listings
-- follow, each target's settled seq ('' when none: the whole group is planned), then per
-- listing to plan its ref, the seq of its latest change (0: none pending) and its fields in
-- FIELDS order (nil for a field the hash lacks), then the refs of the other members: those
-- every target has settled (lb:dirty, lb:settled).
--!include ../declared.lua
--!include ../group_state.lua
local g, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local lk, due, sk = KEYS[1], KEYS[4], KEYS[6]
local gk = {pending = KEYS[3], dirty = KEYS[7], settled = sk}
local held = redis.call('PTTL', lk)
if held > 0 then
  -- Another flush runs: come back when its lease would lapse (never sooner than planned).
  make_due_not_before(due, g, now + held)
  return {0, held}
end
local members = redis.call('SMEMBERS', KEYS[8])
local missing = {}
for _, ref in ipairs(members) do
  for _, key in ipairs({ARGV[4] .. ref, ARGV[5] .. ref}) do
    if not declared(key) then missing[#missing + 1] = key end
  end
end
if #missing > 0 then return {'missing', unpack(missing)} end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', lk, token, 'PX', lease)
local seq, first = take_changes(gk)
-- If this worker dies, the group falls due again when its lease lapses.
make_due_not_before(due, g, now + lease)
redis.call('ZADD', KEYS[5], now + lease, g)
-- The least settled seq over the targets: changes after it are planned; none recorded for a
-- target (or no targets): every member is.
local full, floor = #ARGV < 6, nil
local settled = {}
for i = 6, #ARGV do
  local value = redis.call('HGET', sk, ARGV[i])
  settled[#settled + 1] = value or ''
  if value then
    if not floor or tonumber(value) < floor then floor = tonumber(value) end
  else
    full = true
  end
end
-- A listing's body, from its own key. A hash written before bodies had one holds it as a
-- field: moved to the key (unless the key, newer, is there) and the hash written afresh without
-- it, so it becomes a small listpack (Redis never shrinks a hash's encoding in place).
local function body(ref, old)
  local bk = ARGV[5] .. ref
  local current = redis.call('GET', bk)
  if old then
    if not current then
      current = old
      redis.call('SET', bk, old)
    end
    local hk = ARGV[4] .. ref
    local all, ttl = redis.call('HGETALL', hk), redis.call('PTTL', hk)
    redis.call('DEL', hk)
    for i = 1, #all, 2 do
      if all[i] ~= __BODY_FIELD__ then redis.call('HSET', hk, all[i], all[i + 1]) end
    end
    if ttl > 0 then redis.call('PEXPIRE', hk, ttl) end
  end
  return current
end
local changed = {}
local flat = redis.call('HGETALL', KEYS[7])
for i = 1, #flat, 2 do changed[flat[i]] = tonumber(flat[i + 1]) end
local out = {token, seq, first, 0}
for _, value in ipairs(settled) do out[#out + 1] = value end
local others, planned = {}, 0
for _, ref in ipairs(members) do
  local at = changed[ref]
  if full or (at and at > floor) then
    planned = planned + 1
    out[#out + 1] = ref
    out[#out + 1] = at or 0
    local values = redis.call('HMGET', ARGV[4] .. ref, __FIELDS__)
    values[__BODY_AT__] = body(ref, values[__BODY_AT__])
    for i = 1, #values do out[#out + 1] = values[i] end  -- a missing field is false: nil to us
  else
    others[#others + 1] = ref
  end
end
out[4] = planned
for _, ref in ipairs(others) do out[#out + 1] = ref end
return out
