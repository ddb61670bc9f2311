-- fold_state: the state that names the rest of the fold's keys (bridge/ingest/inbox.py), read
-- in one call rather than one command per listing: each listing's group, each snapshot's
-- group's members. Reads only. A key of the wrong type reads as nothing: the fold meets it and
-- sets its entry aside.
-- KEYS[1...] the listings' hashes (lb:listing:<ref>), then the snapshots' groups' members
--   (lb:members:<group>)
-- ARGV[1] how many of KEYS are listings
-- Returns: {group or false per listing, then {members...} per snapshot group}
local listings = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local ok, found
  if i <= listings then
    ok, found = pcall(redis.call, 'HGET', KEYS[i], __G__)
  else
    ok, found = pcall(redis.call, 'SMEMBERS', KEYS[i])
  end
  out[i] = ok and found or false
end
return out
