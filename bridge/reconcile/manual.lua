-- A manual run's check (bridge reconcile): the group's last check as the periodic pass keeps
-- it, so the pages show it; neither the pass under way, the schedule nor a check's lock moves.
-- KEYS[1] checks: lb:reconcile:checks:<target>
-- KEYS[2] pass: lb:reconcile:pass:<target>
-- KEYS[3] unknown: lb:reconcile:unknown:<target>
-- KEYS[4] found: lb:reconcile:found:<target>
-- ARGV[1] group
-- ARGV[2] when it was checked (ms)
-- ARGV[3] the check's record (JSON)
-- ARGV[4] how many listings unknown to the bridge remain
-- ARGV[5] how many differences it found
-- Returns: 1
--!include last_check.lua
last_check(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], tonumber(ARGV[2]), ARGV[3],
           tonumber(ARGV[4]), tonumber(ARGV[5]))
return 1
