-- One step of a sweep over lb:groups: each group a target's schedule lacks gets its first slot;
-- one scheduled far beyond any slot of the current interval (the interval was shortened) gets
-- a slot within it.
-- KEYS[1] groups: lb:groups
-- KEYS[2...] due: lb:reconcile:due:<target>, one per target of ARGV[7...], in order
-- ARGV[1] the sweep's cursor ("0" starts one)
-- ARGV[2] how many groups to scan (SSCAN's COUNT)
-- ARGV[3] now (ms)
-- ARGV[4] the pass's interval (ms)
-- ARGV[5] grace (ms): a group seen for the first time is checked no sooner
-- ARGV[6] retake (ms): how far on a taken check is moved
-- ARGV[7] what each check's name starts with ("" for the tenant default, else "<tenant>/"):
--   schedule.name, so two tenants' checks of one group name fall due at different times
-- ARGV[8...] target: one per key of KEYS[2...]
-- Returns: {the next cursor ("0": the sweep is done), how many checks were scheduled}
--!include slot.lua
local cursor, count, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local interval, grace, retake = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local reply = redis.call('SSCAN', KEYS[1], cursor, 'COUNT', count)
local late = now + 2 * interval + retake
local added = 0
for _, g in ipairs(reply[2]) do
  for i = 2, #KEYS do
    local target = ARGV[6 + i]
    local due = redis.call('ZSCORE', KEYS[i], g)
    if not due or tonumber(due) > late then
      redis.call('ZADD', KEYS[i], slot(ARGV[7] .. target .. ':' .. g, interval, now + grace), g)
      added = added + 1
    end
  end
end
return {reply[1], added}
