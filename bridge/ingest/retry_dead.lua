-- retry_dead: entries the fold set aside go back to the inbox's head, oldest first, each only if
-- it is still set aside (another operator may have acted since it was read); its failures so
-- far kept for the fold that meets it next (bridge/ingest/inbox.py: DeadLetters.retry).
-- KEYS[1] dead: lb:inbox:dead
-- KEYS[2] inbox: lb:inbox
-- KEYS[3] retries: lb:inbox:retries
-- ARGV[1] the retries' lifetime (ms)
-- ARGV[2...] per record: the record, its entry, the entry's sha1, its attempts
-- Returns: how many went back
local dead, inbox, retries = KEYS[1], KEYS[2], KEYS[3]
local moved = 0
for i = #ARGV - 3, 2, -4 do
  if redis.call('LREM', dead, 1, ARGV[i]) == 1 then
    redis.call('LPUSH', inbox, ARGV[i + 1])
    redis.call('HSET', retries, ARGV[i + 2], ARGV[i + 3])
    moved = moved + 1
  end
end
if moved > 0 then redis.call('PEXPIRE', retries, ARGV[1]) end
return moved
