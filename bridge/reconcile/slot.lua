-- fragment: when a (target, group)'s periodic check falls due, as schedule.slot_ms computes it:
-- at its phase of the interval, a hash of its name (schedule.name). The first 12 hex digits of
-- the SHA-1 (48 bits) are exact in Lua's numbers (doubles).
local function slot(name, interval, after)
  local phase = tonumber(string.sub(redis.sha1hex(name), 1, 12), 16) % interval
  return after + ((phase - after) % interval)
end
