-- The script client's tests' script: appends its argument to a list, so the order in which
-- Redis ran the calls is visible; "boom" raises a script error.
-- KEYS[1] calls: the list
-- ARGV[1] value
-- Returns: {value, the list's length}
if ARGV[1] == 'boom' then return redis.error_reply('ERR boom') end
redis.call('RPUSH', KEYS[1], ARGV[1])
return {ARGV[1], redis.call('LLEN', KEYS[1])}
