-- Release or discard a held change on every target named that holds it, only if it is still
-- the one the operator reviewed there: all of them or none.
-- KEYS[1...] target: lb:held:<target>, lb:release:<target>:<group>,
-- lb:discarded:<target>:<group>, per target in ARGV
-- ARGV[1] group
-- ARGV[2] the reviewed digest
-- ARGV[3] release | discard
-- ARGV[4] the group's change counter (lb:pending seq)
-- ARGV[5] idle: the markers' lifetime (ms)
-- ARGV[6...] targets
-- Returns: {0} when none of them holds the group, {1, held} when one holds another change (that
-- one), {2, held} when done
if #KEYS ~= 3 * (#ARGV - 5) then return redis.error_reply('pinned: three keys per target') end
local group, digest, action, seq, idle = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local holding, first = {}, nil
for i = 6, #ARGV do
  local base = 1 + 3 * (i - 6)
  local held = redis.call('HGET', KEYS[base], group)
  if held then
    if cjson.decode(held)['digest'] ~= digest then return {1, held} end
    table.insert(holding, base)
    first = first or held
  end
end
if not first then return {0} end
local marker = cjson.encode({digest = digest, seq = seq})
for _, base in ipairs(holding) do
  if action == 'release' then
    redis.call('SET', KEYS[base + 1], marker, 'PX', idle)
  else
    redis.call('SET', KEYS[base + 2], marker, 'PX', idle)
    redis.call('HDEL', KEYS[base], group)
  end
end
return {2, first}
