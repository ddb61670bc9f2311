-- Settle a bulk's answer, if this sender still holds the target. An outbox entry goes (or is
-- rescheduled) only if it still holds that very write; a newer write of the listing stays. The
-- operation's intent is settled if it is still the standing one. An accepted write whose
-- listing moved on since it was planned marks it changed again (accepted.lua) unless a newer
-- write of it waits behind; an accepted deletion always does, so its group's next flush
-- compacts it. The further writes (history, figures, stories) are named ones (writes.lua).
-- An operation taken from a group's lane leaves it with its entry; a listing still waiting
-- (retried, or newer content) stays in (or, after a PUT, goes back to) that lane at its place
-- in lb:outbox:ready: a retry's at its backoff, newer content behind an accepted write's at
-- now (it was just written: the group's other listings go first). A bulk's answer ends the
-- bulk in flight; a PUT's, its PUT record.
-- KEYS[1] sender: lb:sender:<target>
-- KEYS[2] outbox: lb:outbox:<target>
-- KEYS[3] ready: lb:outbox:ready:<target>
-- KEYS[4] intents: lb:intent:<target>
-- KEYS[5] accepted: lb:accepted:<target>
-- KEYS[6] quarantine: lb:quarantine:<target>
-- KEYS[7] batch: lb:outbox:batch:<target>
-- KEYS[8] due: lb:due
-- KEYS[9] groups: lb:outbox:groups:<target>
-- KEYS[10] puts: lb:outbox:puts:<target>
-- KEYS[11...] more: each operation's lb:listing:<ref> and lane (lb:outbox:ready:<target>:<group>),
-- the further writes' keys, then those the acceptances may touch
-- ARGV[1] token
-- ARGV[2] now (ms)
-- ARGV[3] idle: the lifetime of a group's keys (ms)
-- ARGV[4] prefixes: JSON {pending, dirty, settled}, of a group's keys
-- ARGV[5] operations: JSON [{kind = accepted | refused | retry, ref, listing (the index of its
-- lb:listing:<ref> in KEYS), deletion, digest, key, record (JSON to store), at (retry), stamp
-- (what it was planned from; absent in old entries), lane (its group's lane; absent: none),
-- lane_key (the index of that lane in KEYS)}]
-- ARGV[6] writes: JSON [{name, {key index...}, {argument...}}]
-- ARGV[7] for: bulk (the bulk in flight) | put (single PUTs the sender took)
-- Returns: 1, 0 (not held: nothing written), {'missing', key...} (as fenced.lua)
--!include ../declared.lua
--!include ../group_state.lua
--!include accepted.lua
--!include writes.lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local at = {due = KEYS[8], now = tonumber(ARGV[2]), idle = tonumber(ARGV[3]),
            prefixes = cjson.decode(ARGV[4])}
local box, ready, intents = KEYS[2], KEYS[3], KEYS[4]
local groups, puts, put = KEYS[9], KEYS[10], ARGV[7] == 'put'
local ops, writes = cjson.decode(ARGV[5]), cjson.decode(ARGV[6])
local KINDS = {accepted = true, refused = true, retry = true}
local problem, missing = check_writes(writes, at)
if problem then return redis.error_reply(problem) end
for n, o in ipairs(ops) do
  if not (KINDS[o.kind] and type(o.ref) == 'string' and KEYS[o.listing]
          and type(o.key) == 'string' and type(o.record) == 'string') then
    return redis.error_reply('operation ' .. n .. ': malformed')
  end
  if o.lane ~= nil and not (type(o.lane) == 'string' and KEYS[o.lane_key]) then
    return redis.error_reply('operation ' .. n .. ': malformed lane')
  end
  if o.kind == 'accepted' then
    for _, key in ipairs(undeclared(KEYS[o.listing], at.prefixes)) do
      missing[#missing + 1] = key
    end
  end
end
if #missing > 0 then return {'missing', unpack(missing)} end
for _, o in ipairs(ops) do
  local raw = redis.call('HGET', box, o.ref)
  local same = false
  if raw then
    local e = cjson.decode(raw)
    same = e.key == o.key and e.digest == o.digest
  end
  if o.kind == 'retry' then
    if same then
      redis.call('HSET', box, o.ref, o.record)
      redis.call('ZADD', ready, o.at, o.ref)
    end
  else
    if same then
      redis.call('HDEL', box, o.ref)
      redis.call('ZREM', ready, o.ref)
    end
    if o.kind == 'accepted' then
      -- Newer content that waits behind goes after the listings written longer ago (as a
      -- flush queues it: outbox.put_writes), not at the place the answered write held.
      if raw and not same then redis.call('ZADD', ready, 'XX', at.now, o.ref) end
      redis.call('HSET', KEYS[5], o.ref, o.record)
      redis.call('HDEL', KEYS[6], o.ref)
      accepted(KEYS[o.listing], intents, o.ref, o.key, o.stamp, o.deletion, raw and not same, at)
    else
      local intent = redis.call('HGET', intents, o.ref)
      if intent and cjson.decode(intent).key == o.key then redis.call('HDEL', intents, o.ref) end
      redis.call('HSET', KEYS[6], o.ref, o.record)
    end
  end
  if put then redis.call('HDEL', puts, o.ref) end
  if o.lane then
    local lane = KEYS[o.lane_key]
    local place = redis.call('ZSCORE', ready, o.ref)
    if place and redis.call('HEXISTS', box, o.ref) == 1 then
      redis.call('ZADD', lane, place, o.ref)
      redis.call('ZADD', groups, 'NX', at.now, o.lane)
    else
      redis.call('ZREM', lane, o.ref)
      if redis.call('ZCARD', lane) == 0 then redis.call('ZREM', groups, o.lane) end
    end
  end
end
if not put then redis.call('DEL', KEYS[7]) end
run_writes(writes, at)
return 1
