-- GCRA over one or more buckets: each keeps its "theoretical arrival time" (TAT); a request is
-- allowed when it is not more than a bucket's burst tolerance ahead of now. With several
-- buckets it must fit all of them, and only then is it recorded in all (atomically: a refusal
-- takes nothing from any bucket).
-- KEYS[1...] bucket: lb:ratelimit:<target>, lb:ratelimit:<target>:reads or :bulk
-- ARGV[1] now (ms)
-- ARGV[2...] per bucket, in KEYS' order: its interval (ms per request), then its tolerance (ms)
-- Returns: 0 (allowed, recorded in every bucket) or the ms to wait for the slowest bucket
local now, wait, tats = tonumber(ARGV[1]), 0, {}
for i, key in ipairs(KEYS) do
  local burst = tonumber(ARGV[2 * i + 1])
  local tat = math.max(tonumber(redis.call('GET', key) or now), now)
  tats[i] = tat
  if tat - burst > now then wait = math.max(wait, math.ceil(tat - burst - now)) end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  local tat = tats[i] + tonumber(ARGV[2 * i])
  redis.call('SET', key, tat, 'PX', math.ceil(tat - now) + 1000)
end
return 0
