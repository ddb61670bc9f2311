-- A periodic check's outcome, written only while its lock is still its own: the group's last
-- check, the pass's totals (a pass is full once every group, and the whole portal on a
-- per-listing target, was checked since it began: its totals become the last full pass's),
-- when the group is next due; the lock released.
-- KEYS[1] lock: lb:reconcile:lock:<target>:<group>
-- KEYS[2] due: lb:reconcile:due:<target>
-- KEYS[3] running: lb:reconcile:running:<target>
-- KEYS[4] checks: lb:reconcile:checks:<target>
-- KEYS[5] pass: lb:reconcile:pass:<target>
-- KEYS[6] passed: lb:reconcile:pass:<target>:groups
-- KEYS[7] unknown: lb:reconcile:unknown:<target>
-- KEYS[8] found: lb:reconcile:found:<target>
-- KEYS[9] failed: lb:reconcile:failed:<target>
-- KEYS[10] groups: lb:groups
-- ARGV[1] the check's token
-- ARGV[2] group
-- ARGV[3] now (ms)
-- ARGV[4] when the group's next check is due (ms)
-- ARGV[5] the check's record (JSON)
-- ARGV[6] how many listings unknown to the bridge it found
-- ARGV[7] 1 if the pass also reads the whole portal (one check more per pass), else 0
-- ARGV[8...] how many were found of each kind (compare.KINDS, in order), then how many of
-- each were repaired, then how many listings could not be read
-- Returns: 0 (the lock is not this check's: nothing written), 1, or 2 when the pass is full
--!include last_check.lua
local lock, due, running, checks, pass, passed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6]
local unknown, found, failed, groups = KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local token, group, now, next_due = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local record, unknown_count, extra = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local kinds = {__KINDS__}
-- Listings that cannot be read: not counted in the pass, but the group has found something.
local unreadable = tonumber(ARGV[8 + 2 * #kinds])
if redis.call('GET', lock) ~= token then return 0 end
local any = unreadable
for i, kind in ipairs(kinds) do
  local n, fixed = tonumber(ARGV[7 + i]), tonumber(ARGV[7 + #kinds + i])
  any = any + n
  redis.call('HINCRBY', pass, 'found:' .. kind, n)
  redis.call('HINCRBY', pass, 'repaired:' .. kind, fixed)
end
last_check(checks, pass, unknown, found, group, now, record, unknown_count, any)
redis.call('HDEL', failed, group)
redis.call('HSETNX', pass, 'started', now)
redis.call('HINCRBY', pass, 'checks', 1)
redis.call('SADD', passed, group)
local full = 0
if redis.call('SCARD', passed) >= redis.call('SCARD', groups) + extra then
  -- Every group checked since the pass began: it becomes the last full pass.
  local last = {'last_started', redis.call('HGET', pass, 'started'), 'last_finished', now,
                'last_checks', redis.call('HGET', pass, 'checks')}
  local spent = {'started', 'checks'}
  for _, kind in ipairs(kinds) do
    for _, what in ipairs({'found:', 'repaired:'}) do
      last[#last + 1] = 'last_' .. what .. kind
      last[#last + 1] = redis.call('HGET', pass, what .. kind) or '0'
      spent[#spent + 1] = what .. kind
    end
  end
  redis.call('HSET', pass, unpack(last))
  redis.call('HDEL', pass, unpack(spent))
  redis.call('DEL', passed)
  full = 1
end
redis.call('ZADD', due, next_due, group)
redis.call('DEL', lock)
redis.call('ZREM', running, group)
return 1 + full
