-- fragment: a group's change counter (accepted.lua, mark_due.lua). A group's keys come as a
-- table {pending, dirty, settled}. Its counter (seq) never goes backwards: created afresh
-- (lb:pending gone), it starts above every seq the group still records in lb:settled and
-- lb:dirty. Pending, dirty and settled share one lifetime.
local function lifetime(gk, idle)
  for _, key in ipairs({gk.pending, gk.dirty, gk.settled}) do
    redis.call('PEXPIRE', key, idle)
  end
end

-- A fresh change of the group: its next seq.
local function bump(gk)
  if redis.call('HEXISTS', gk.pending, 'seq') == 1 then
    return redis.call('HINCRBY', gk.pending, 'seq', 1)
  end
  local top = 0
  for _, key in ipairs({gk.settled, gk.dirty}) do
    for _, value in ipairs(redis.call('HVALS', key)) do
      top = math.max(top, tonumber(value) or 0)
    end
  end
  redis.call('HSET', gk.pending, 'seq', top + 1)
  return top + 1
end
