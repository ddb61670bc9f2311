-- fragment: a portal's acceptance of a write (writes.lua, the sender's settle.lua); needs
-- ../declared.lua and ../group_state.lua (which writes the group's keys). The keys of a
-- listing's current group, known only once its hash is read, are built from the prefixes the
-- script got in ARGV (group_keys), and checked with declared() before anything is written
-- (undeclared).

-- What an acceptance of the listing whose hash is lk may touch and was not declared: the keys
-- of its current group (a list of names; empty when all were).
local function undeclared(lk, prefixes)
  local g = redis.call('HGET', lk, __GROUP_FIELD__)
  local out = {}
  if not g then return out end
  local gk = group_keys(prefixes, g)
  for _, key in ipairs({gk.pending, gk.dirty, gk.settled}) do
    if not declared(key) then out[#out + 1] = key end
  end
  return out
end

-- The listing ref changed (again) in group g: planned by g's next flush, due now. `at`: {due
-- (the key), now, idle, prefixes}.
local function redirty(ref, g, at)
  local gk = group_keys(at.prefixes, g)
  mark_dirty(gk, ref, bump(gk))
  lifetime(gk, at.idle)
  make_due_by(at.due, g, at.now)
end

-- Has the listing's desired state (hash lk) moved on from stamp {g, v, t, d, at} (nil:
-- unknown)? Its current group, or nil when the listing is gone.
local function moved_on(lk, stamp)
  local cur = redis.call('HMGET', lk, __STAMP_FIELDS__)
  if not cur[1] then return false, nil end
  if not stamp then return true, cur[1] end
  local deleted = cur[4] ~= '0' and 1 or 0
  local moved = cur[1] ~= stamp[1] or (tonumber(cur[2]) or -1) ~= stamp[2]
    or (tonumber(cur[3]) or 0) ~= stamp[3] or deleted ~= stamp[4]
    or (tonumber(cur[5]) or 0) ~= stamp[5]
  return moved, cur[1]
end

-- A write of ref (hash lk) was accepted, planned from stamp; per-listing writes name their
-- target's intents (ik) and intent key. If the listing moved on since, it is marked changed
-- again in its current group (so no flush that settled the newer change before this record
-- leaves the portal on older content); `force`: in any case. A newer write of it queued behind
-- this one (`later`) settles that. The write's own intent goes (no key: whatever stands);
-- another's, if the listing moved on, is distrusted: the portal may have applied the two writes
-- in either order.
local function accepted(lk, ik, ref, key, stamp, force, later, at)
  local moved, g = moved_on(lk, stamp)
  if later then moved = false end
  if g and (moved or force) then redirty(ref, g, at) end
  if not ik then return end
  local raw = redis.call('HGET', ik, ref)
  if not raw then return end
  if not key or cjson.decode(raw).key == key then
    redis.call('HDEL', ik, ref)
  elseif moved then
    redis.call('HSET', ik, ref, __DISTRUSTED__)
  end
end
