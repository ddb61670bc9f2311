-- The writes of no lease's holder (an operator's, through the ledger), named and checked
-- (writes.lua), atomically. Acceptances are a flush's alone (fenced.lua).
-- KEYS[1...] written: the keys the writes name
-- ARGV[1] now (ms)
-- ARGV[2] idle: the lifetime of a group's keys (ms)
-- ARGV[3] prefixes: JSON {pending, dirty, settled}, of a group's keys
-- ARGV[4] writes: JSON [{name, {key index...}, {argument...}}]
-- Returns: 1 (applied), {'missing', key...} (as fenced.lua)
--!include ../declared.lua
--!include ../group_state.lua
--!include accepted.lua
--!include writes.lua
local at = {now = tonumber(ARGV[1]), idle = tonumber(ARGV[2]), prefixes = cjson.decode(ARGV[3])}
return apply_checked(cjson.decode(ARGV[4]), at)
