-- Take writes of a per-listing target ahead of their groups' flushes (ahead.py), if this sender
-- holds the target: each joins the outbox (its group's lane, at the place given) with its
-- intent, only while no flush holds its group (that flush may have read the listing before:
-- its writes land after), the listing's desired state is still the one it was planned from
-- (its stamp: never older content than the CRM's latest), and nothing of the listing waits in
-- the outbox or in a PUT already (that write goes as it is, with newer content where fresh.lua
-- may give it). Each is recorded in its group's lb:ahead with the seq of the change it carries,
-- and a create stays marked so ("<seq>:c") until the group's flush has counted it.
-- KEYS[1] sender: lb:sender:<target>
-- KEYS[2] outbox: lb:outbox:<target>
-- KEYS[3] ready: lb:outbox:ready:<target>
-- KEYS[4] senders: lb:senders
-- KEYS[5] groups: lb:outbox:groups:<target>
-- KEYS[6] intents: lb:intent:<target>
-- KEYS[7] puts: lb:outbox:puts:<target>
-- KEYS[8...] per group, three in a row: lb:lease:<group>, its lane lb:outbox:ready:<target>:
--   <group>, lb:ahead:<target>:<group>; then per write: lb:listing:<ref>
-- ARGV[1] token
-- ARGV[2] target
-- ARGV[3] now (ms)
-- ARGV[4] lb:ahead's lifetime (ms)
-- ARGV[5] writes: JSON [{ref, group (the index in KEYS of its group's lease: lane and record
--   follow it), listing (the index of its hash), stamp [g, v, t, d, at], seq, create (0/1),
--   place (its place in the lane, ms), entry (JSON: the outbox entry), intent (JSON)}]
-- Returns: 0 (the sender does not hold the target: nothing written), else {ref...} taken
--!include ../declared.lua
--!include ../group_state.lua
--!include accepted.lua
--!include writes.lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local box, puts, intents = KEYS[2], KEYS[7], KEYS[6]
local target, now, idle = ARGV[2], ARGV[3], tonumber(ARGV[4])
local taken, groups = {}, {}

for _, w in ipairs(cjson.decode(ARGV[5])) do
  local lease, lk = KEYS[w.group], KEYS[w.listing]
  local lane, record = KEYS[w.group + 1], KEYS[w.group + 2]
  local moved, current = false, nil
  if lease and lk and lane and record then moved, current = moved_on(lk, w.stamp) end
  if current and not moved and redis.call('EXISTS', lease) == 0
      and redis.call('HEXISTS', box, w.ref) == 0 and redis.call('HEXISTS', puts, w.ref) == 0 then
    local g = groups[w.group]
    if not g then
      g = {places = {}, args = {}}
      groups[w.group] = g
    end
    g.places[w.ref] = w.place
    g.args[#g.args + 1] = w.ref
    g.args[#g.args + 1] = w.entry
    redis.call('HSET', intents, w.ref, w.intent)
    local was = redis.call('HGET', record, w.ref)
    local create = w.create == 1 or (was and string.sub(was, -#__CREATE__) == __CREATE__)
    redis.call('HSET', record, w.ref, tostring(w.seq) .. (create and __CREATE__ or ''))
    redis.call('PEXPIRE', record, idle)
    taken[#taken + 1] = w.ref
  end
end

for index, g in pairs(groups) do
  local args = {target, now, cjson.encode(g.places)}
  for _, x in ipairs(g.args) do args[#args + 1] = x end
  WRITES['queue'].run({box, KEYS[3], KEYS[4], KEYS[index + 1], KEYS[5]}, args)
end
return taken
