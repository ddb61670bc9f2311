-- Make groups due at `at` unless sooner, as a change would: each gets a fresh seq (never
-- backwards) and forgets what its targets settled.
-- KEYS[1] due: lb:due
-- KEYS[2...] group: lb:pending:<group>, lb:dirty:<group>, lb:settled:<group>, per group in ARGV
-- ARGV[1] at (ms)
-- ARGV[2] idle: the lifetime of a group's keys (ms)
-- ARGV[3...] groups
-- Returns: the number of groups
--!include ../group_state.lua
if #KEYS ~= 1 + 3 * (#ARGV - 2) then
  return redis.error_reply('mark_due: three keys per group')
end
local at, idle = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, #ARGV do
  local base = 2 + 3 * (i - 3)
  local gk = {pending = KEYS[base], dirty = KEYS[base + 1], settled = KEYS[base + 2]}
  bump(gk)
  redis.call('DEL', gk.settled)
  lifetime(gk, idle)
  make_due_by(KEYS[1], ARGV[i], at)
end
return #ARGV - 2
