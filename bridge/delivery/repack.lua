-- Packs claimed bodies stored plain, exactly or not at all: a body is replaced only if its
-- SHA-1 is that of the JSON the flush packed, so a newer event's body is never replaced by an
-- older one's. The claim that read the bodies moved any still kept in the listing hash to
-- lb:body:{ref}.
-- KEYS[1...] body: lb:body:<ref>, one per listing
-- ARGV[1...] per body, in KEYS' order: the SHA-1 of its plain JSON, then its packed form
-- Returns: how many bodies were packed
local packed = 0
for i, key in ipairs(KEYS) do
  local body = redis.call('GET', key)
  if body and redis.sha1hex(body) == ARGV[2 * i - 1] then
    redis.call('SET', key, ARGV[2 * i])
    packed = packed + 1
  end
end
return packed
