-- Give writes the sender has just taken their listings' newer content, if this sender holds
-- the target: each entry is replaced (content, digest, key, stamp; its place in its lane and
-- in lb:outbox:ready kept) and its new intent recorded, only while the outbox still holds the
-- very write that was taken (same key and digest) and, for a PUT, while its record does too
-- and it has never been sent. A write a flush replaced meanwhile is left as the flush put it,
-- and so is one whose group a flush holds now: that flush may have read the listing before
-- the newer content came, and its write must not land on top of this one.
-- KEYS[1] sender: lb:sender:<target>
-- KEYS[2] outbox: lb:outbox:<target>
-- KEYS[3] intents: lb:intent:<target>
-- KEYS[4] puts: lb:outbox:puts:<target>
-- KEYS[5...] leases: lb:lease:<group> of the writes' groups
-- ARGV[1] token
-- ARGV[2] writes: JSON [{ref, key, digest (the write taken), entry (JSON: the newer write as
-- the outbox keeps it), intent (JSON: its intent), put (JSON: its PUT record; absent: a bulk's
-- operation), lease (the index of its group's lease in KEYS)}]
-- Returns: 0 (not held: nothing written), else {ref...} of the writes replaced
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local box, intents, puts = KEYS[2], KEYS[3], KEYS[4]
local done = {}

-- Is raw (a JSON write, or a PUT record's) still the write taken?
local function same(raw, w)
  if not raw then return false end
  local ok, e = pcall(cjson.decode, raw)
  if not ok or type(e) ~= 'table' then return false end
  if e.op ~= nil then
    if (tonumber(e.attempts) or 0) ~= 0 then return false end  -- sent once: it keeps its key
    e = e.op
  end
  return type(e) == 'table' and e.key == w.key and e.digest == w.digest
    and (tonumber(e.attempts) or 0) == 0
end

for _, w in ipairs(cjson.decode(ARGV[2])) do
  if KEYS[w.lease] and redis.call('EXISTS', KEYS[w.lease]) == 0
      and same(redis.call('HGET', box, w.ref), w)
      and (w.put == nil or same(redis.call('HGET', puts, w.ref), w)) then
    redis.call('HSET', box, w.ref, w.entry)
    redis.call('HSET', intents, w.ref, w.intent)
    if w.put ~= nil then redis.call('HSET', puts, w.ref, w.put) end
    done[#done + 1] = w.ref
  end
end
return done
