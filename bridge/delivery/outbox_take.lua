-- Take the next writes from a target's outbox, if this sender holds it: round-robin across the
-- groups' lanes (in KEYS' order: the group served longest ago first), one from each lane in
-- turn, oldest first within a lane; then, if there is room, entries queued before lanes were
-- kept (in lb:outbox:ready alone), oldest first. A write taken for a PUT, or excluded (the
-- bulk in flight), is never taken. The groups served go to the back of the turn, in the order
-- they were last served. For PUTs the writes taken are recorded (lb:outbox:puts) and leave
-- their lanes until answered (settle.lua).
-- A lane member whose entry is gone is dropped; a lane left empty leaves the groups.
-- KEYS[1] sender: lb:sender:<target>
-- KEYS[2] outbox: lb:outbox:<target>
-- KEYS[3] ready: lb:outbox:ready:<target>
-- KEYS[4] groups: lb:outbox:groups:<target>
-- KEYS[5] puts: lb:outbox:puts:<target>
-- KEYS[6...] lanes: lb:outbox:ready:<target>:<group>, of the groups in lb:outbox:groups read
-- by the caller, in their order
-- ARGV[1] token
-- ARGV[2] now (ms)
-- ARGV[3] at most this many writes
-- ARGV[4] for: bulk | put
-- ARGV[5] excluded refs: JSON [ref...]
-- Returns: 0 (not held: nothing written), else {group ('' when taken from ready alone), ref,
-- JSON entry, ...} in the order they go
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local box, ready, groups, puts = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, most, put = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == 'put'
local skip = {}
for _, ref in ipairs(cjson.decode(ARGV[5])) do skip[ref] = true end
local out, taken, count = {}, {}, 0

local function usable(ref)
  return not skip[ref] and not taken[ref] and redis.call('HEXISTS', puts, ref) == 0
end

local function take(group, ref, raw)
  taken[ref] = true
  count = count + 1
  out[#out + 1] = group
  out[#out + 1] = ref
  out[#out + 1] = raw
end

local lanes = {}
for i = 6, #KEYS do
  lanes[#lanes + 1] = {key = KEYS[i], group = string.sub(KEYS[i], #ready + 2), at = 0}
end
local served, lane_of = {}, {}
for _, lane in ipairs(lanes) do lane_of[lane.group] = lane.key end
local going = true
while going and count < most do
  going = false
  for _, lane in ipairs(lanes) do
    while not lane.done and count < most do
      local first = redis.call('ZRANGEBYSCORE', lane.key, '-inf', now, 'LIMIT', lane.at, 1)[1]
      if not first then
        lane.done = true
      else
        local raw = redis.call('HGET', box, first)
        if not raw then
          redis.call('ZREM', lane.key, first)  -- its entry is gone: a stale member
        elseif usable(first) then
          take(lane.group, first, raw)
          lane.at = lane.at + 1
          served[lane.group] = count  -- where it was last served in this take
          going = true
          break
        else
          lane.at = lane.at + 1
        end
      end
    end
  end
end

-- Entries in no lane (queued before lanes were kept): only when the lanes ran short, oldest
-- first; a bounded look.
if count < most then
  local at, looked, limit = 0, 0, 4 * most + #cjson.decode(ARGV[5])
  while count < most and looked < limit do
    local some = redis.call('ZRANGEBYSCORE', ready, '-inf', now, 'LIMIT', at, 50)
    if #some == 0 then break end
    for _, ref in ipairs(some) do
      looked = looked + 1
      if count < most and usable(ref) then
        local raw = redis.call('HGET', box, ref)
        if raw then take('', ref, raw) end
      end
    end
    at = at + #some
  end
end

-- In the order they were last served (a fraction of a ms apart): the next take, a PUT's
-- above all, begins with the group this one served earliest, not with the first by name, so
-- the PUTs between two bulks go round every group in turn.
for group, at in pairs(served) do
  redis.call('ZADD', groups, 'XX', now + at / 1000, group)
end
if put then
  for i = 1, #out, 3 do
    local group, ref = out[i], out[i + 1]
    redis.call('HSET', puts, ref, '{"lane":' .. cjson.encode(group) .. ',"at":' .. ARGV[2] ..
      ',"attempts":0,"not_before":0,"op":' .. out[i + 2] .. '}')
    if group ~= '' then redis.call('ZREM', lane_of[group], ref) end
  end
end
for _, lane in ipairs(lanes) do
  if redis.call('ZCARD', lane.key) == 0 then redis.call('ZREM', groups, lane.group) end
end
return out
