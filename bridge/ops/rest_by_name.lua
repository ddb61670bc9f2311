-- The groups by name past those a page lists first: Redis sorts the set itself, so only the
-- page crosses the network (bridge/ops/reads.py, Reads.groups).
-- KEYS[1] groups: lb:groups
-- ARGV[1] how many of the rest to skip
-- ARGV[2] how many to return at most
-- ARGV[3...] the groups listed first: left out
-- Returns: the groups, as SORT ALPHA orders them
local skip, count, out, first = tonumber(ARGV[1]), tonumber(ARGV[2]), {}, {}
for i = 3, #ARGV do first[ARGV[i]] = true end
for _, group in ipairs(redis.call('SORT', KEYS[1], 'ALPHA')) do
  if not first[group] then
    if skip > 0 then skip = skip - 1 else
      out[#out + 1] = group
      if #out >= count then break end
    end
  end
end
return out
