-- The writes of a lease's holder (a flush of its group, the sender of its target), named and
-- checked (writes.lua): all of them if the lease still holds the token, else none.
-- KEYS[1] lease: lb:lease:<group> or lb:sender:<target>
-- KEYS[2...] written: the keys the writes name, then those their acceptances may touch
-- ARGV[1] token
-- ARGV[2] now (ms)
-- ARGV[3] idle: the lifetime of a group's keys (ms)
-- ARGV[4] prefixes: JSON {pending, dirty, settled}, of a group's keys
-- ARGV[5] writes: JSON [{name, {key index...}, {argument...}}]
-- Returns: 1 (applied), 0 (the lease is not held: nothing written), {'missing', key...} (an
-- acceptance would touch these undeclared keys: nothing written)
--!include ../declared.lua
--!include ../group_state.lua
--!include accepted.lua
--!include writes.lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local at = {now = tonumber(ARGV[2]), idle = tonumber(ARGV[3]), prefixes = cjson.decode(ARGV[4])}
return apply_checked(cjson.decode(ARGV[5]), at)
