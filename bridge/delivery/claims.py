"""Claiming a group's flush under a fenced, renewable lease, and finishing it, atomically.

A claim takes the group's pending changes (clears ``first`` so new changes start a new
debounce), takes the group's *lease* (``lb:lease:{group}``: a short expiry holding a fencing
token from ``lb:fence``, which never repeats) and returns a consistent snapshot of the group's
desired state. While a lease is held no other flush of the group starts: a claim that finds one
returns nothing and makes the group due when that lease would lapse, so a worker that dies
mid-flush costs at most one lease (seconds), not a job timeout.

The flush renews its lease while it runs (:class:`Lease`), and every write it makes after a
portal call goes through :meth:`Lease.apply`: one script that applies the writes only if the
token is still current. A worker frozen past its lease (SIGSTOP, a long GC, a VM pause) wakes to
find its token stale and writes nothing; it also stops calling the portal, because the lease's
local deadline has passed. Finishing is fenced the same way and removes the group from
``lb:due`` only if nothing arrived meanwhile. Key layout: ``bridge/constants.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge import constants as k
from bridge.clock import now_ms
from bridge.delivery.desired import (
    BODY_FIELD,
    FIELDS,
    DesiredListing,
    bare_tombstone,
    decode_fields,
)
from bridge.delivery.idempotency import DISTRUSTED
from bridge.logs import about
from bridge.scripts import LuaValue, splice
from bridge.settings import DebounceSettings

log = logging.getLogger("bridge.delivery.claims")

# Planning imports DesiredListing from here.
__all__ = ["ACCEPTED_LUA", "ACCEPTED_NAMES", "CLAIM", "FENCED", "FINISH", "RENEW", "Acceptance",
           "Claim", "Command", "DesiredListing", "Flushes", "Lease", "LeaseLost",
           "RenewableLease", "Stamp", "kept", "mark_due", "stamp"]

# What a write was planned from: the listing's group, version (-1: none), occurred_at, deleted
# (1/0) and received-at, as lb:listing holds them. Every applied event changes the last.
Stamp = tuple[str, int, int, int, int]
_STAMP_FIELDS = tuple(k.LISTING_FIELDS[i] for i in (0, 1, 2, 3, 5))


def stamp(listing: DesiredListing) -> Stamp:
    """The stamp of the desired state a write is planned from."""
    version = -1 if listing.version is None else listing.version
    return (listing.group, version, listing.occurred_ms, int(listing.deleted),
            listing.received_ms)


@dataclass(frozen=True)
class Acceptance:
    """A write's acceptance as the fenced script checks it (``accepted`` in ACCEPTED_LUA):
    ``target`` and ``key`` for a per-listing write, whose intent it settles (no key: whatever
    intent stands); a group sync's listings have neither."""

    ref: str
    stamp: Stamp | None
    target: str | None = None
    key: str | None = None

    def arg(self) -> dict[str, object]:
        out: dict[str, object] = {"ref": self.ref}  # no nulls: cjson would decode them truthy
        for name in ("stamp", "target", "key"):
            if (value := getattr(self, name)) is not None:
                out[name] = value
        return out


# Lua functions for the scripts that record a portal's acceptance (FENCED here, the outbox's
# SETTLE) and for mark_due; spliced with ACCEPTED_NAMES. A group's change counter (seq) never
# goes backwards: created afresh (lb:pending gone), it starts above every seq the group still
# records in lb:settled and lb:dirty. Pending, dirty and settled share one lifetime.
ACCEPTED_LUA = """
local function lifetime(g)
  for _, key in ipairs({__PENDING__ .. g, __DIRTY__ .. g, __SETTLED__ .. g}) do
    redis.call('PEXPIRE', key, __IDLE__)
  end
end

-- A fresh change of group g: its next seq.
local function bump(g)
  local pk = __PENDING__ .. g
  if redis.call('HEXISTS', pk, 'seq') == 1 then return redis.call('HINCRBY', pk, 'seq', 1) end
  local top = 0
  for _, key in ipairs({__SETTLED__ .. g, __DIRTY__ .. g}) do
    for _, value in ipairs(redis.call('HVALS', key)) do
      top = math.max(top, tonumber(value) or 0)
    end
  end
  redis.call('HSET', pk, 'seq', top + 1)
  return top + 1
end

-- The listing ref changed (again) in group g: planned by g's next flush, due now.
local function redirty(ref, g, now)
  redis.call('HSET', __DIRTY__ .. g, ref, bump(g))
  lifetime(g)
  redis.call('ZADD', __DUE__, 'LT', now, g)
end

-- Has the listing's desired state moved on from stamp {g, v, t, d, at} (nil: unknown)? Its
-- current group, or nil when the listing is gone.
local function moved_on(ref, stamp)
  local cur = redis.call('HMGET', __LISTING__ .. ref, __STAMP_FIELDS__)
  if not cur[1] then return false, nil end
  if not stamp then return true, cur[1] end
  local deleted = cur[4] ~= '0' and 1 or 0
  local moved = cur[1] ~= stamp[1] or (tonumber(cur[2]) or -1) ~= stamp[2]
    or (tonumber(cur[3]) or 0) ~= stamp[3] or deleted ~= stamp[4]
    or (tonumber(cur[5]) or 0) ~= stamp[5]
  return moved, cur[1]
end

-- A write of ref (per-listing: to target, with intent key) was accepted, planned from stamp.
-- If the listing moved on since, it is marked changed again in its current group (so no
-- flush that settled the newer change before this record leaves the portal on older content);
-- `force`: in any case. A newer write of it queued behind this one (`later`) settles that.
-- The write's own intent goes (no key: whatever stands); another's, if the listing moved on,
-- is distrusted: the portal may have applied the two writes in either order.
local function accepted(target, ref, key, stamp, now, force, later)
  local moved, g = moved_on(ref, stamp)
  if later then moved = false end
  if g and (moved or force) then redirty(ref, g, now) end
  if not target then return end
  local ik = __INTENT__ .. target
  local raw = redis.call('HGET', ik, ref)
  if not raw then return end
  if not key or cjson.decode(raw).key == key then
    redis.call('HDEL', ik, ref)
  elseif moved then
    redis.call('HSET', ik, ref, __DISTRUSTED__)
  end
end
"""
ACCEPTED_NAMES: dict[str, LuaValue] = {
    "PENDING": k.PENDING, "DIRTY": k.DIRTY, "SETTLED": k.SETTLED, "DUE": k.DUE,
    "IDLE": k.GROUP_IDLE_MS, "LISTING": k.LISTING, "INTENT": k.INTENT,
    "STAMP_FIELDS": _STAMP_FIELDS, "DISTRUSTED": orjson.dumps(asdict(DISTRUSTED)).decode()}

# ARGV[4...]: the targets. Returns {0, pttl} when another flush holds the group; else the token,
# seq, first, how many listings follow, each target's settled seq ('' when none: the whole group
# is planned), then per listing to plan its ref, the seq of its latest change (0: none pending)
# and its fields in FIELDS order (nil for a field the hash lacks), then the refs of the other
# members: those every target has settled (lb:dirty, lb:settled).
CLAIM = splice("""
local g, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local lk = __LEASE__ .. g
local held = redis.call('PTTL', lk)
if held > 0 then
  -- Another flush runs: come back when its lease would lapse (never sooner than planned).
  redis.call('ZADD', __DUE__, 'GT', now + held, g)
  return {0, held}
end
local token = redis.call('INCR', __FENCE__)
redis.call('SET', lk, token, 'PX', lease)
local pk = __PENDING__ .. g
local seq = redis.call('HGET', pk, 'seq') or '0'
local first = redis.call('HGET', pk, 'first') or ''
redis.call('HDEL', pk, 'first')
-- If this worker dies, the group falls due again when its lease lapses.
redis.call('ZADD', __DUE__, 'GT', now + lease, g)
redis.call('ZADD', __FLUSHING__, now + lease, g)
-- The least settled seq over the targets: changes after it are planned; none recorded for a
-- target (or no targets): every member is.
local full, floor = #ARGV < 4, nil
local settled = {}
for i = 4, #ARGV do
  local value = redis.call('HGET', __SETTLED__ .. g, ARGV[i])
  settled[#settled + 1] = value or ''
  if value then
    if not floor or tonumber(value) < floor then floor = tonumber(value) end
  else
    full = true
  end
end
-- A listing's body, from its own key. A hash written before bodies had one holds it as a
-- field: moved to the key (unless the key, newer, is there) and the hash written afresh without
-- it, so it becomes a small listpack (Redis never shrinks a hash's encoding in place).
local function body(ref, old)
  local bk = __BODYK__ .. ref
  local current = redis.call('GET', bk)
  if old then
    if not current then
      current = old
      redis.call('SET', bk, old)
    end
    local lk = __LISTING__ .. ref
    local all, ttl = redis.call('HGETALL', lk), redis.call('PTTL', lk)
    redis.call('DEL', lk)
    for i = 1, #all, 2 do
      if all[i] ~= __BODY_FIELD__ then redis.call('HSET', lk, all[i], all[i + 1]) end
    end
    if ttl > 0 then redis.call('PEXPIRE', lk, ttl) end
  end
  return current
end
local changed = {}
local flat = redis.call('HGETALL', __DIRTY__ .. g)
for i = 1, #flat, 2 do changed[flat[i]] = tonumber(flat[i + 1]) end
local out = {token, seq, first, 0}
for _, value in ipairs(settled) do out[#out + 1] = value end
local others, planned = {}, 0
for _, ref in ipairs(redis.call('SMEMBERS', __MEMBERS__ .. g)) do
  local at = changed[ref]
  if full or (at and at > floor) then
    planned = planned + 1
    out[#out + 1] = ref
    out[#out + 1] = at or 0
    local values = redis.call('HMGET', __LISTING__ .. ref, __FIELDS__)
    values[__BODY_AT__] = body(ref, values[__BODY_AT__])
    for i = 1, #values do out[#out + 1] = values[i] end  -- a missing field is false: nil to us
  else
    others[#others + 1] = ref
  end
end
out[4] = planned
for _, ref in ipairs(others) do out[#out + 1] = ref end
return out
""", {"LEASE": k.LEASE, "FENCE": k.FENCE, "PENDING": k.PENDING, "DUE": k.DUE,
      "FLUSHING": k.FLUSHING, "MEMBERS": k.MEMBERS, "LISTING": k.LISTING, "FIELDS": FIELDS,
      "SETTLED": k.SETTLED, "DIRTY": k.DIRTY, "BODYK": k.BODY,
      "BODY_AT": FIELDS.index(BODY_FIELD) + 1, "BODY_FIELD": BODY_FIELD})

RENEW = splice("""
local g, token, now, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('GET', __LEASE__ .. g) ~= token then return 0 end
redis.call('PEXPIRE', __LEASE__ .. g, lease)
redis.call('ZADD', __DUE__, 'XX', 'GT', now + lease, g)
redis.call('ZADD', __FLUSHING__, now + lease, g)
return 1
""", {"LEASE": k.LEASE, "DUE": k.DUE, "FLUSHING": k.FLUSHING})

# The writes of a flush after a portal call: all of them if the token is current, else none.
# ARGV: group, token, JSON [commands], then (optional) JSON [Acceptance.arg()] of the writes
# the commands record as accepted, checked after them, and now.
FENCED = splice(ACCEPTED_LUA + """
local g, token = ARGV[1], ARGV[2]
if redis.call('GET', __LEASE__ .. g) ~= token then return 0 end
for _, command in ipairs(cjson.decode(ARGV[3])) do redis.call(unpack(command)) end
for _, o in ipairs(cjson.decode(ARGV[4] or '[]')) do
  accepted(o.target, o.ref, o.key, o.stamp, tonumber(ARGV[5]), false, false)
end
return 1
""", {**ACCEPTED_NAMES, "LEASE": k.LEASE})

# ARGV: group, token, the claimed seq, when the group is next due (-1: not), now, the debounce
# window and max wait, JSON [targets whose turn settled every change up to the claimed seq:
# never a later one, whose content the flush did not plan], JSON [every target]. A change every
# target has settled leaves lb:dirty. The group's scheduling keys get one lifetime.
FINISH = splice("""
local g, token, claimed = ARGV[1], ARGV[2], ARGV[3]
local next_due, now = tonumber(ARGV[4]), tonumber(ARGV[5])
local window, maxwait = tonumber(ARGV[6]), tonumber(ARGV[7])
if redis.call('GET', __LEASE__ .. g) ~= token then return -1 end
redis.call('DEL', __LEASE__ .. g)
redis.call('ZREM', __FLUSHING__, g)
local sk, dk = __SETTLED__ .. g, __DIRTY__ .. g
for _, t in ipairs(cjson.decode(ARGV[8])) do
  if (tonumber(redis.call('HGET', sk, t)) or -1) < tonumber(claimed) then
    redis.call('HSET', sk, t, claimed)
  end
end
for _, key in ipairs({sk, dk, __PENDING__ .. g}) do redis.call('PEXPIRE', key, __IDLE__) end
local floor = nil
for _, t in ipairs(cjson.decode(ARGV[9])) do
  local value = tonumber(redis.call('HGET', sk, t))
  if not value then floor = nil break end
  if not floor or value < floor then floor = value end
end
if floor then
  local flat = redis.call('HGETALL', dk)
  for i = 1, #flat, 2 do
    if tonumber(flat[i + 1]) <= floor then redis.call('HDEL', dk, flat[i]) end
  end
end
local pk = __PENDING__ .. g
local seq = redis.call('HGET', pk, 'seq') or '0'
if seq ~= claimed then
  -- Changes arrived during the flush: due when their debounce says (a bare seq bump, as an
  -- operator's action makes, means now), or sooner if a target asked for that.
  local times = redis.call('HMGET', pk, 'first', 'last')
  local first, last = tonumber(times[1]), tonumber(times[2])
  local due = now
  if first then due = math.min((last or first) + window, first + maxwait) end
  if next_due >= 0 then due = math.min(due, next_due) end
  redis.call('ZADD', __DUE__, due, g)
  return 0
end
if next_due >= 0 then
  redis.call('ZADD', __DUE__, next_due, g)
else
  redis.call('ZREM', __DUE__, g)
end
return 1
""", {"LEASE": k.LEASE, "FLUSHING": k.FLUSHING, "PENDING": k.PENDING, "DUE": k.DUE,
      "SETTLED": k.SETTLED, "DIRTY": k.DIRTY, "IDLE": k.GROUP_IDLE_MS})

# A Redis command as the fenced script runs it: every argument a string.
Command = tuple[str, ...]
# Lua's unpack() takes at most a few thousand values: longer commands are split.
MAX_COMMAND_ARGS = 1_000


class LeaseLost(Exception):
    """Another flush took the group: this one must stop calling portals and write nothing."""


# ARGV: when, then the groups. Each gets a fresh seq (bump: never backwards), forgets what its
# targets settled, and is due at `when` unless sooner.
MARK_DUE = splice(ACCEPTED_LUA + """
local at = tonumber(ARGV[1])
for i = 2, #ARGV do
  local g = ARGV[i]
  bump(g)
  redis.call('DEL', __SETTLED__ .. g)
  lifetime(g)
  redis.call('ZADD', __DUE__, 'LT', at, g)
end
return #ARGV - 1
""", ACCEPTED_NAMES)


async def mark_due(redis: Redis, groups: list[str], at_ms: int) -> None:
    """Make groups due now, as a change would: a flush running meanwhile keeps them due. What
    every target had settled is forgotten: the next flush plans the whole group (an operator's
    action, a resume, a repair: whatever was settled may need sending again)."""
    if groups:
        await redis.register_script(MARK_DUE)(keys=[], args=[at_ms, *groups])


@dataclass(frozen=True)
class Claim:
    """A group's changes under a new lease. ``listings``: the members some target has not
    settled yet (every member when a target has settled nothing), with their desired state;
    ``others``: the refs of the rest, which every target holds as settled; ``changed``: the
    seq of each listing's latest unsettled change; ``settled``: per target, the seq up to
    which it settled every change (None: plan the whole group for it)."""

    group: str
    token: str
    seq: str
    first_pending_ms: int | None
    listings: list[DesiredListing]
    others: list[str] = field(default_factory=list)
    changed: dict[str, int] = field(default_factory=dict)
    settled: dict[str, int | None] = field(default_factory=dict)

    def unsettled(self, target: str) -> list[DesiredListing]:
        """The listings to plan for ``target``: changed since it last settled the group."""
        floor = self.settled.get(target)
        if floor is None:
            return self.listings
        return [listing for listing in self.listings
                if self.changed.get(listing.ref, 0) > floor]

    @property
    def members(self) -> list[str]:
        return sorted([*(listing.ref for listing in self.listings), *self.others])


class RenewableLease(ABC):
    """A lease held in Redis while work runs: renewed in the background, checked before every
    portal call (``ensure``), and the fence every write after a portal call goes through
    (``apply``). Subclasses say what is leased and how the renewal and the fence reach Redis."""

    def __init__(self, lease_ms: int) -> None:
        self.lease_ms = lease_ms
        # Local deadline: the lease cannot outlive the last renewal sent plus its length.
        self._valid_until = time.monotonic() + lease_ms / 1000
        self._lost = False

    @property
    @abstractmethod
    def what(self) -> str:
        """What is leased, for messages: "group 'g1'"."""

    @abstractmethod
    async def _renew(self) -> bool: ...

    @abstractmethod
    async def _fenced(self, commands: Sequence[Command],
                      accepted: Sequence[Acceptance] = ()) -> bool: ...

    def _log_extra(self) -> dict[str, str]:
        return {}

    def ensure(self) -> None:
        """Raise LeaseLost unless the holder may still call a portal. The margin covers the
        time a call takes to leave once started."""
        if self._lost or time.monotonic() > self._valid_until - 0.5:
            self._lost = True
            raise LeaseLost(f"the lease on {self.what} lapsed")

    async def renew(self) -> bool:
        sent = time.monotonic()
        ok = await self._renew()
        if ok and not self._lost:
            self._valid_until = sent + self.lease_ms / 1000
        else:
            self._lost = True
        return ok

    async def keep(self) -> None:
        """Renew every third of the lease until cancelled or lost."""
        while not self._lost:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                if not await self.renew():
                    log.warning("lost the lease on %s; stopping", self.what,
                                extra=self._log_extra())
                    return
            except (RedisError, OSError) as exc:
                # Keep trying: the local deadline stops portal calls if Redis stays away.
                log.warning("could not renew the lease on %s: %s", self.what, exc,
                            extra=self._log_extra())

    async def apply(self, commands: Sequence[Command],
                    accepted: Sequence[Acceptance] = ()) -> None:
        """Run ``commands`` atomically if the lease is still held; else LeaseLost. ``accepted``:
        the writes they record as accepted (see ACCEPTED_LUA), checked in the same step."""
        if not commands and not accepted:
            return
        if not await self._fenced(commands, accepted):
            self._lost = True
            raise LeaseLost(f"{self.what} was taken over")


@contextlib.asynccontextmanager
async def kept(lease: RenewableLease) -> AsyncIterator[None]:
    """Renew ``lease`` in the background while the block runs."""
    keeper = asyncio.create_task(lease.keep())
    try:
        yield
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper


class Lease(RenewableLease):
    """A claimed group's lease while its flush runs."""

    def __init__(self, flushes: Flushes, claim: Claim, lease_ms: int) -> None:
        super().__init__(lease_ms)
        self._flushes = flushes
        self.claim = claim

    @property
    def group(self) -> str:
        return self.claim.group

    @property
    def what(self) -> str:
        return f"group {self.group!r}"

    def _log_extra(self) -> dict[str, str]:
        return about(self.group)

    async def _renew(self) -> bool:
        return await self._flushes.renew(self.claim, self.lease_ms)

    async def _fenced(self, commands: Sequence[Command],
                      accepted: Sequence[Acceptance] = ()) -> bool:
        return await self._flushes.fenced(self.claim, commands, accepted)


class Flushes:
    def __init__(self, redis: Redis, lease_ms: int, debounce: DebounceSettings,
                 targets: Sequence[str] = ()) -> None:
        """``targets``: the configured targets, whose settled changes claims leave out (none:
        every claim returns every member)."""
        self.targets = list(targets)
        self._window_ms = debounce.window_ms
        self._max_wait_ms = debounce.max_wait_ms
        self._claim = redis.register_script(CLAIM)
        self._renew = redis.register_script(RENEW)
        self._fenced = redis.register_script(FENCED)
        self._finish = redis.register_script(FINISH)
        self.lease_ms = lease_ms

    async def claim(self, group: str, now_ms: int) -> Claim | None:
        """The group's changes and desired state under a new lease; None while another flush
        holds it."""
        raw = await self._claim(keys=[], args=[group, now_ms, self.lease_ms, *self.targets])
        if int(raw[0]) == 0:
            return None
        token, seq, first = str(raw[0]), _text(raw[1]), _text(raw[2])  # INCR: an integer
        planned, at = int(raw[3]), 4 + len(self.targets)
        settled = {t: int(v) if (v := _text(raw[4 + i])) else None
                   for i, t in enumerate(self.targets)}
        step = 2 + len(FIELDS)
        end = at + planned * step
        listings = [_listing(group, _text(raw[i]), raw[i + 2:i + step])
                    for i in range(at, end, step)]
        changed = {_text(raw[i]): int(raw[i + 1]) for i in range(at, end, step)
                   if int(raw[i + 1])}
        listings.sort(key=lambda listing: listing.ref)
        others = sorted(_text(ref) for ref in raw[end:])
        return Claim(group, token, seq, int(first) if first else None, listings, others,
                     changed, settled)

    @contextlib.asynccontextmanager
    async def leased(self, claim: Claim) -> AsyncIterator[Lease]:
        """The claim's lease, renewed in the background while the block runs."""
        lease = Lease(self, claim, self.lease_ms)
        async with kept(lease):
            yield lease

    async def renew(self, claim: Claim, lease_ms: int) -> bool:
        return bool(await self._renew(keys=[], args=[claim.group, claim.token, now_ms(),
                                                     lease_ms]))

    async def fenced(self, claim: Claim, commands: Sequence[Command],
                     accepted: Sequence[Acceptance] = ()) -> bool:
        return bool(await self._fenced(keys=[], args=[
            claim.group, claim.token, orjson.dumps(list(_split(commands))),
            orjson.dumps([a.arg() for a in accepted]), now_ms()]))

    async def finish(self, claim: Claim, next_due_ms: int | None,
                     settled: Sequence[str] = ()) -> bool:
        """True if the group had no new changes; False if they arrived during the flush.
        ``settled``: the targets whose turn settled every change the claim held. Raises
        LeaseLost (and changes nothing) if another flush has taken the group."""
        due = -1 if next_due_ms is None else next_due_ms
        result = int(await self._finish(keys=[], args=[
            claim.group, claim.token, claim.seq, due, now_ms(), self._window_ms,
            self._max_wait_ms, orjson.dumps(list(settled)), orjson.dumps(self.targets)]))
        if result < 0:
            raise LeaseLost(f"group {claim.group!r} was claimed by another flush")
        return bool(result)


# ZADD's options come before its score/member pairs: every part of a split ZADD repeats them.
ZADD_OPTIONS = frozenset({"NX", "XX", "GT", "LT", "CH"})


def _split(commands: Sequence[Command]) -> list[Command]:
    """Commands with at most MAX_COMMAND_ARGS arguments; long HSET/HDEL/SADD/ZADD are split."""
    out: list[Command] = []
    for command in commands:
        name, key, *args = command
        if len(args) <= MAX_COMMAND_ARGS:
            out.append(command)
            continue
        options: list[str] = []
        if name.upper() == "ZADD":
            while args and args[0].upper() in ZADD_OPTIONS:
                options.append(args.pop(0))
        # An even step keeps HSET's field/value pairs and ZADD's score/member pairs together.
        for i in range(0, len(args), MAX_COMMAND_ARGS):
            out.append((name, key, *options, *args[i:i + MAX_COMMAND_ARGS]))
    return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _listing(group: str, ref: str, values: Sequence[bytes | str | None]) -> DesiredListing:
    return decode_fields(ref, values) or bare_tombstone(ref, group)
