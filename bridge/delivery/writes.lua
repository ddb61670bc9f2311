-- fragment: the named writes (claims.Write) that fenced.lua, write.lua and settle.lua apply; needs
-- declared.lua and accepted.lua. A write is {name, {key...}, {argument...}}, each key an index
-- into KEYS, so it touches nothing undeclared. Every write is checked (its name, the number of
-- its keys, its arguments, the keys its acceptance may touch) before any is applied: a
-- malformed one applies none. Long argument lists go in chunks: unpack() has a limit.
local CHUNK = 500  -- even: pairs stay together

local function strings(a, from)
  for i = from or 1, #a do
    if type(a[i]) ~= 'string' then return false end
  end
  return true
end
local function numbers(a, from, step)
  for i = from, #a, step do
    if not tonumber(a[i]) then return false end
  end
  return true
end
local function some(a) return #a >= 1 and strings(a) end
local function pairs_of(a) return #a >= 2 and #a % 2 == 0 and strings(a) end
local function exactly(n) return function(a) return #a == n and strings(a) end end

-- redis.call(command, key, ...head, items...) in chunks of at most CHUNK items.
local function chunked(command, key, items, from, ...)
  local head = {...}
  for i = from, #items, CHUNK do
    local part = {}
    for _, v in ipairs(head) do part[#part + 1] = v end
    for j = i, math.min(i + CHUNK - 1, #items) do part[#part + 1] = items[j] end
    redis.call(command, key, unpack(part))
  end
end

local TARGET_FIELDS = {}
for _, name in ipairs({__TARGET_FIELDS__}) do TARGET_FIELDS[name] = true end
local function target_fields(a)
  if not pairs_of(a) then return false end
  for i = 1, #a, 2 do
    if not TARGET_FIELDS[a[i]] then return false end
  end
  return true
end

-- name -> {keys = {least, most}, args = check(args), run(keys, args, at)}; `keys`: the names.
local WRITES = {
  -- lb:intent:<target>: scope, JSON intent, ...
  ['record intents'] = {keys = {1, 1}, args = pairs_of,
    run = function(k, a) chunked('HSET', k[1], a, 1) end},
  ['distrust'] = {keys = {1, 1}, args = some, run = function(k, a)
    for _, scope in ipairs(a) do redis.call('HSET', k[1], scope, __DISTRUSTED__) end
  end},
  ['settle intents'] = {keys = {1, 1}, args = some,
    run = function(k, a) chunked('HDEL', k[1], a, 1) end},
  -- lb:accepted:<target>, lb:quarantine:<target>: ref, JSON record
  ['record accepted'] = {keys = {2, 2}, args = exactly(2), run = function(k, a)
    redis.call('HSET', k[1], a[1], a[2])
    redis.call('HDEL', k[2], a[1])
  end},
  -- lb:listing:<ref>, lb:due[, lb:intent:<target>]: {ref, stamp, key}
  ['accepted'] = {keys = {2, 3}, accepts = true,
    args = function(a) return #a == 1 and type(a[1]) == 'table' and type(a[1].ref) == 'string'
      and (a[1].stamp == nil or type(a[1].stamp) == 'table') end,
    run = function(k, a, at)
      local o = a[1]
      accepted(k[1], k[3], o.ref, o.key, o.stamp, false, false,
               {due = k[2], now = at.now, idle = at.idle, prefixes = at.prefixes})
    end},
  -- lb:accepted:<target>:<group>: a group sync's records
  ['clear records'] = {keys = {1, 1}, args = exactly(0),
    run = function(k) redis.call('DEL', k[1]) end},
  ['drop records'] = {keys = {1, 1}, args = some,
    run = function(k, a) chunked('HDEL', k[1], a, 1) end},
  ['write records'] = {keys = {1, 1}, args = pairs_of,
    run = function(k, a) chunked('HSET', k[1], a, 1) end},
  -- lb:syncdigest:<target>:<group>: digest
  ['sync digest'] = {keys = {1, 1}, args = exactly(1),
    run = function(k, a, at) redis.call('SET', k[1], a[1], 'PX', at.idle) end},
  -- lb:verified:<target>: group, epoch | group
  ['verify'] = {keys = {1, 1}, args = exactly(2),
    run = function(k, a) redis.call('HSET', k[1], a[1], a[2]) end},
  ['unverify'] = {keys = {1, 1}, args = exactly(1),
    run = function(k, a) redis.call('HDEL', k[1], a[1]) end},
  -- lb:quarantine:<target>: ref, JSON entry, ... | refs
  ['quarantine'] = {keys = {1, 1}, args = pairs_of,
    run = function(k, a) chunked('HSET', k[1], a, 1) end},
  ['unquarantine'] = {keys = {1, 1}, args = some,
    run = function(k, a) chunked('HDEL', k[1], a, 1) end},
  -- lb:held:<target>, lb:release:<target>:<group>: group, JSON held | group
  ['hold'] = {keys = {2, 2}, args = exactly(2), run = function(k, a)
    redis.call('HSET', k[1], a[1], a[2])
    redis.call('DEL', k[2])
  end},
  ['unhold'] = {keys = {2, 2}, args = exactly(1), run = function(k, a)
    redis.call('HDEL', k[1], a[1])
    redis.call('DEL', k[2])
  end},
  -- lb:ahead:<target>:<group>: the writes taken ahead of the group's flush, now counted by it
  ['forget ahead'] = {keys = {1, 1}, args = exactly(0),
    run = function(k) redis.call('DEL', k[1]) end},
  -- lb:discarded:<target>:<group>
  ['forget discard'] = {keys = {1, 1}, args = exactly(0),
    run = function(k) redis.call('DEL', k[1]) end},
  -- lb:backoff:<target>:<group>, lb:target:<target>: attempts, not before, reason, now
  ['back off'] = {keys = {2, 2}, args = function(a) return exactly(4)(a)
      and tonumber(a[1]) and tonumber(a[2]) and tonumber(a[4]) end,
    run = function(k, a, at)
      redis.call('HSET', k[1], 'attempts', a[1], 'not_before', a[2])
      redis.call('PEXPIRE', k[1], at.idle)
      redis.call('HSET', k[2], 'last_error', a[3], 'last_error_at', a[4])
    end},
  ['clear backoff'] = {keys = {1, 1}, args = exactly(0),
    run = function(k) redis.call('DEL', k[1]) end},
  -- lb:target:<target>: field, value, ... (the fields the delivery side keeps there)
  ['note'] = {keys = {1, 1}, args = target_fields,
    run = function(k, a) redis.call('HSET', k[1], unpack(a)) end},
  -- lb:target:<target>, lb:senders: target, now
  ['resume'] = {keys = {2, 2}, args = exactly(2), run = function(k, a)
    redis.call('HDEL', k[1], 'paused', 'paused_at', 'blocked_until')
    redis.call('ZADD', k[2], 'LT', a[2], a[1])  -- LT adds a missing member too
  end},
  -- lb:history, lb:history:<group>: JSON attempt
  ['history'] = {keys = {2, 2}, args = exactly(1), run = function(k, a, at)
    redis.call('LPUSH', k[1], a[1])
    redis.call('LTRIM', k[1], 0, __HISTORY_MAXLEN__ - 1)
    redis.call('LPUSH', k[2], a[1])
    redis.call('LTRIM', k[2], 0, __GROUP_HISTORY_MAXLEN__ - 1)
    redis.call('PEXPIRE', k[2], at.idle)
  end},
  -- lb:metrics: field, by, ... (bridge/counters.py): counts (integers), a histogram's sums
  ['count'] = {keys = {1, 1}, args = function(a) return pairs_of(a) and numbers(a, 2, 2) end,
    run = function(k, a)
      for i = 1, #a, 2 do redis.call('HINCRBY', k[1], a[i], a[i + 1]) end
    end},
  ['sum'] = {keys = {1, 1}, args = function(a) return pairs_of(a) and numbers(a, 2, 2) end,
    run = function(k, a)
      for i = 1, #a, 2 do redis.call('HINCRBYFLOAT', k[1], a[i], a[i + 1]) end
    end},
  -- lb:stats:<minute>: target, outcome
  ['per minute'] = {keys = {1, 1}, args = exactly(2), run = function(k, a)
    redis.call('HINCRBY', k[1], 'calls:' .. a[1], 1)
    redis.call('HINCRBY', k[1], a[2] .. ':' .. a[1], 1)
    redis.call('EXPIRE', k[1], __STATS_TTL_S__)
  end},
  -- lb:latency: ms, ...
  ['latency'] = {keys = {1, 1}, args = function(a) return some(a) and numbers(a, 1, 1) end,
    run = function(k, a)
      chunked('LPUSH', k[1], a, 1)
      redis.call('LTRIM', k[1], 0, __LATENCY_MAXLEN__ - 1)
    end},
  -- lb:trace:<ref>: its lifetime (ms), then entries, oldest first
  ['trace'] = {keys = {1, 1}, args = function(a) return #a >= 2 and strings(a)
      and tonumber(a[1]) end,
    run = function(k, a)
      chunked('LPUSH', k[1], a, 2)
      redis.call('LTRIM', k[1], 0, __TRACE_MAXLEN__ - 1)
      redis.call('PEXPIRE', k[1], a[1])
    end},
  -- lb:outbox:<target>, lb:outbox:ready:<target>, lb:senders[, lb:outbox:ready:<target>:<group>
  -- (the group's lane), lb:outbox:groups:<target>]: target, now, JSON {ref: its place in the
  -- lane (ms), for those not placed at now}, then ref, JSON entry
  ['queue'] = {keys = {3, 5}, args = function(a) return #a >= 5 and #a % 2 == 1 and strings(a)
      and tonumber(a[2]) end,
    run = function(k, a)
      -- A listing not waiting yet joins the group's lane (at the place given: when the change
      -- it carries came, so the oldest change goes first); one waiting already
      -- (newer content) keeps its place and its lane, and one taken for a PUT stays out of
      -- every lane until that PUT is answered (settle.lua puts it back).
      local fresh, place = {}, cjson.decode(a[3])
      if k[4] then
        for i = 4, #a, 2 do
          if redis.call('HEXISTS', k[1], a[i]) == 0 then fresh[#fresh + 1] = a[i] end
        end
      end
      chunked('HSET', k[1], a, 4)
      -- NX: newer content of a listing already waiting keeps its place in the queue (else a
      -- listing that changes more often than the outbox drains would never reach the front).
      for i = 4, #a, 2 do redis.call('ZADD', k[2], 'NX', a[2], a[i]) end
      if #fresh > 0 then
        for _, ref in ipairs(fresh) do
          local now = tonumber(a[2])
          redis.call('ZADD', k[4], 'NX', math.min(tonumber(place[ref]) or now, now), ref)
        end
        -- NX: a group with a lane already keeps its turn.
        redis.call('ZADD', k[5], 'NX', a[2], string.sub(k[4], #k[2] + 2))
      end
      redis.call('ZADD', k[3], 'LT', a[2], a[1])  -- LT adds a missing member too
    end},
  -- lb:outbox:batch:<target>: JSON batch
  ['batch'] = {keys = {1, 1}, args = exactly(1),
    run = function(k, a) redis.call('SET', k[1], a[1]) end},
  -- lb:outbox:puts:<target>: ref, JSON record (a PUT the sender took, to go again)
  ['put record'] = {keys = {1, 1}, args = exactly(2),
    run = function(k, a) redis.call('HSET', k[1], a[1], a[2]) end},
  -- lb:linked:<target>: refs | lb:adopt:<target>: ref, JSON held create
  ['link'] = {keys = {1, 1}, args = some, run = function(k, a) chunked('SADD', k[1], a, 1) end},
  ['hold create'] = {keys = {1, 1}, args = exactly(2),
    run = function(k, a) redis.call('HSET', k[1], a[1], a[2]) end},
}

-- The writes checked: an error message, or nil and the keys their acceptances may touch that
-- were not declared (a list, empty when all were). `at`: {now, idle, prefixes}.
local function check_writes(writes, at)
  local missing = {}
  for n, w in ipairs(writes) do
    local spec = type(w) == 'table' and WRITES[w[1]]
    if not spec then return 'write ' .. n .. ': no such write' end
    local keys, args = w[2], w[3]
    if type(keys) ~= 'table' or #keys < spec.keys[1] or #keys > spec.keys[2] then
      return 'write ' .. n .. ' (' .. w[1] .. '): wrong number of keys'
    end
    for _, i in ipairs(keys) do
      if not KEYS[i] then return 'write ' .. n .. ' (' .. w[1] .. '): no key ' .. i end
    end
    if type(args) ~= 'table' or not spec.args(args) then
      return 'write ' .. n .. ' (' .. w[1] .. '): wrong arguments'
    end
    if spec.accepts then
      for _, key in ipairs(undeclared(KEYS[keys[1]], at.prefixes)) do
        missing[#missing + 1] = key
      end
    end
  end
  return nil, missing
end

local function run_writes(writes, at)
  for _, w in ipairs(writes) do
    local names = {}
    for n, i in ipairs(w[2]) do names[n] = KEYS[i] end
    WRITES[w[1]].run(names, w[3], at)
  end
end

-- Check every write, then apply them all: the answer of fenced.lua and write.lua (1 applied;
-- {'missing', key...} when an acceptance would touch undeclared keys: nothing written).
local function apply_checked(writes, at)  -- luacheck: ignore 211 (settle.lua checks its own)
  local problem, missing = check_writes(writes, at)
  if problem then return redis.error_reply(problem) end
  if #missing > 0 then return {'missing', unpack(missing)} end
  run_writes(writes, at)
  return 1
end
