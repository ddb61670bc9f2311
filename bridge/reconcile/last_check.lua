-- fragment: a group's last check, by the periodic pass or a manual run alike (record.lua,
-- manual.lua): kept, with the groups that found something or listings unknown to the bridge,
-- and the count of those in every last check. Every key arrives as an argument, from KEYS.

-- The group in a zset of the newest groups (at most keep of them) while yes, else out of it.
local function mark(zset, yes, now, group, keep)
  if yes then
    redis.call('ZADD', zset, now, group)
    redis.call('ZREMRANGEBYRANK', zset, 0, -(keep + 1))
  else
    redis.call('ZREM', zset, group)
  end
end
local function last_check(checks, pass, unknown, found, group, now, record, unknown_count, any)
  local old = redis.call('HGET', checks, group)
  local before = 0
  if old then before = tonumber(cjson.decode(old)['unknown_count']) or 0 end
  redis.call('HSET', checks, group, record)
  redis.call('HINCRBY', pass, 'unknown', unknown_count - before)
  mark(unknown, unknown_count > 0, now, group, __UNKNOWN_GROUPS__)
  mark(found, any > 0, now, group, __FOUND_GROUPS__)
end
