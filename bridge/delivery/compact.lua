-- Compacts deleted listings of one group to tombstones under the flush's lease: only a listing
-- that is still the same deletion the flush judged (group, version and time), so one that came
-- back meanwhile is kept. Its body and everything kept about it per target go.
-- KEYS[1] lease: lb:lease:<group>
-- KEYS[2] tombstones: lb:tombstones
-- KEYS[3] members: lb:members:<group>
-- KEYS[4] dirty: lb:dirty:<group>
-- KEYS[5...] then per target (ARGV[5] of them): lb:quarantine:<t>, lb:intent:<t>; per
-- per-listing target (ARGV[6]): lb:accepted:<t>, lb:adopt:<t>, lb:linked:<t>; per listing of
-- ARGV[4], in its order: lb:listing:<ref>, lb:body:<ref>
-- ARGV[1] group
-- ARGV[2] the flush's lease token
-- ARGV[3] horizon (ms): how long a tombstone lasts past the later of its time and floor
-- ARGV[4] JSON [[ref, version, time]...]: the deletions the flush judged
-- ARGV[5] how many targets
-- ARGV[6] how many per-listing targets (among them)
-- Returns: how many listings were compacted, or -1 (the lease was lost: nothing done)
local lease, tombstones, members, dirty = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local g, token, horizon = ARGV[1], ARGV[2], tonumber(ARGV[3])
local items = cjson.decode(ARGV[4])
local targets, per_listing = tonumber(ARGV[5]), tonumber(ARGV[6])
local listings = 5 + 2 * targets + 3 * per_listing  -- the first listing's keys
if #KEYS ~= listings - 1 + 2 * #items then
  return redis.error_reply('compact.lua: ' .. #KEYS .. ' keys do not match ARGV[4..6]')
end
if redis.call('GET', lease) ~= token then return -1 end
local V, T, D, G, FLOOR, SOURCES = __V__, __T__, __D__, __G__, __FLOOR__, __SOURCES__
local done = 0
for n, item in ipairs(items) do
  local ref = item[1]
  local lk, bk = KEYS[listings + 2 * n - 2], KEYS[listings + 2 * n - 1]
  local cur = redis.call('HMGET', lk, V, T, D, G, FLOOR, SOURCES)
  if cur[3] == '1' and cur[4] == g and tonumber(cur[1]) == item[2]
      and tonumber(cur[2]) == item[3] then
    -- Written afresh, not trimmed: a hash that once held a body keeps its large encoding.
    redis.call('DEL', lk, bk)
    redis.call('HSET', lk, G, g, V, cur[1], T, cur[2], D, '1')
    if cur[5] then redis.call('HSET', lk, FLOOR, cur[5]) end
    if cur[6] then redis.call('HSET', lk, SOURCES, cur[6]) end
    -- Even if already expired: an event received before then may still wait in the inbox;
    -- the fold removes it once none can.
    local expires = math.max(tonumber(cur[2]), tonumber(cur[5]) or 0) + horizon
    redis.call('ZADD', tombstones, expires, ref)
    redis.call('SREM', members, ref)
    redis.call('HDEL', dirty, ref)
    for i = 5, 4 + 2 * targets, 2 do
      redis.call('HDEL', KEYS[i], ref)  -- quarantine
      redis.call('HDEL', KEYS[i + 1], ref)  -- intent
    end
    for i = 5 + 2 * targets, listings - 1, 3 do
      redis.call('HDEL', KEYS[i], ref)  -- accepted
      redis.call('HDEL', KEYS[i + 1], ref)  -- adopt
      redis.call('SREM', KEYS[i + 2], ref)  -- linked
    end
    done = done + 1
  end
end
return done
