-- discard_dead: entries the fold set aside, dropped for good (bridge/ingest/inbox.py:
-- DeadLetters.discard).
-- KEYS[1] dead: lb:inbox:dead
-- ARGV[1...] the records
-- Returns: how many were still there (and are gone)
local removed = 0
for _, record in ipairs(ARGV) do removed = removed + redis.call('LREM', KEYS[1], 1, record) end
return removed
