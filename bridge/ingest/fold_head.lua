-- fold_head: what the fold's caller reads first (bridge/ingest/inbox.py) to name every key the
-- fold will touch: the inbox's oldest entries, as many as one fold call takes (at most max
-- events, and no more once they name max listings), each told by the names in it (never its
-- bodies: a snapshot's may be a megabyte), and the compacted tombstones the fold's purge may
-- remove (due by Redis's clock, AHEAD ms ahead of it: the fold runs a little later). Reads
-- only.
-- KEYS[1] inbox: lb:inbox
-- KEYS[2] tombstones: lb:tombstones
-- ARGV[1] at most how many events
-- ARGV[2] at most how many listings (past the first event)
-- Returns: {refs of the tombstones due, then per entry, oldest first, {kind (after "D" for a
--   redelivery), received at, group, its refs...}, or {"-"} for one that does not read}
local DUPLICATE = __DUPLICATE__
local INBOX, TOMBSTONES = KEYS[1], KEYS[2]
local max_events, max_listings = tonumber(ARGV[1]), tonumber(ARGV[2])

local clock = redis.call('TIME')
local before = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) - __GRACE__
local out = {redis.call('ZRANGEBYSCORE', TOMBSTONES, '-inf',
                        string.format('(%d', before + __AHEAD__), 'LIMIT', 0, __PURGE__)}
-- One at a time (LINDEX): what the fold will not take is never copied.
local function names(entry)
  local redelivery = string.sub(entry, 1, 1) == DUPLICATE
  local ok, E = pcall(cmsgpack.unpack, redelivery and string.sub(entry, 2) or entry)
  if not ok or type(E) ~= 'table' or #E < 5 then return {'-'}, 0 end
  -- As text whatever they are: one of another type is the fold's to set aside.
  local told = {(redelivery and DUPLICATE or '') .. tostring(E[3]), tostring(E[2]),
                tostring(E[4])}
  for i = 6, #E, 3 do told[#told + 1] = tostring(E[i]) end
  return told, (#E - 5) / 3
end
local taken, listings = 0, 0
while taken < max_events and (taken == 0 or listings < max_listings) do
  local entry = redis.call('LINDEX', INBOX, taken)
  if not entry then break end
  taken = taken + 1
  local told, n = names(entry)
  out[#out + 1] = told
  listings = listings + n
end
return out
