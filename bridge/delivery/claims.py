"""Claiming a group's flush under a fenced, renewable lease, and finishing it, atomically.

A claim takes the group's pending changes (clears ``first`` so new changes start a new
debounce), takes the group's *lease* (``lb:lease:{group}``: a short expiry holding a fencing
token from ``lb:fence``, which never repeats) and returns a consistent snapshot of the group's
desired state. While a lease is held no other flush of the group starts: a claim that finds one
returns nothing and makes the group due when that lease would lapse, so a worker that dies
mid-flush costs at most one lease (seconds), not a job timeout.

The flush renews its lease while it runs (:class:`Lease`), and every write it makes after a
portal call goes through :meth:`Lease.apply`: one script (``fenced.lua``) that applies named,
checked writes (:class:`Write`, ``writes.lua``) only if the token is still current. A worker
frozen past its lease (SIGSTOP, a long GC, a VM pause) wakes to find its token stale and writes
nothing; it also stops calling the portal, because the lease's local deadline has passed.
Finishing is fenced the same way and removes the group from
``lb:due`` only if nothing arrived meanwhile. Each script is a ``.lua`` file beside this module
(its KEYS, ARGV and reply in its header), every key it touches given in KEYS. Key layout:
``bridge/constants.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge import constants as k
from bridge import group_state
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.desired import (
    BODY_FIELD,
    FIELDS,
    DesiredListing,
    bare_tombstone,
    decode_fields,
)
from bridge.delivery.idempotency import DISTRUSTED
from bridge.logs import about
from bridge.replies import text
from bridge.scripts import LuaValue, Script, load
from bridge.settings import DebounceSettings

log = logging.getLogger("bridge.delivery.claims")

# Planning imports DesiredListing from here.
__all__ = ["CLAIM", "FENCED", "FINISH", "MARK_DUE", "RENEW", "WRITE", "WRITE_NAMES",
           "Acceptance", "Claim", "Command", "DesiredListing", "Fence", "Flushes", "Keys",
           "Lease", "LeaseLost", "RenewableLease", "Stamp", "Undeclared", "Write",
           "apply_writes", "declare_groups", "group_keys", "kept", "mark_due", "stamp",
           "with_declared"]

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
    """A write's acceptance as the fenced script checks it (``accepted`` in accepted.lua):
    ``target`` and ``key`` for a per-listing write, whose intent it settles (no key: whatever
    intent stands); a group sync's listings have neither."""

    ref: str
    stamp: Stamp | None
    target: str | None = None
    key: str | None = None

    def arg(self) -> dict[str, object]:
        out: dict[str, object] = {"ref": self.ref}  # no nulls: cjson would decode them truthy
        for name in ("stamp", "key"):
            if (value := getattr(self, name)) is not None:
                out[name] = value
        return out

    def write(self) -> Write:
        """The named write that checks it: its listing, lb:due and (per listing) the intents."""
        intents = () if self.target is None else (ks().INTENT + self.target,)
        return Write("accepted", (ks().LISTING + self.ref, ks().DUE, *intents), (self.arg(),))


# --- Named writes -----------------------------------------------------------------------------
#
# Every write a lease's holder makes after a portal call (the ledger's, the outbox's, the
# adoption gate's) is one of the named, checked writes of writes.lua: a name, the keys it
# touches (each declared to Redis in KEYS) and its arguments. An acceptance ("accepted") may
# also touch its listing's current group, which only a read tells: the caller reads it first
# and declares that group's keys too (``declare_groups``), and the script, finding one
# undeclared, writes nothing and names it (``with_declared`` reads again and retries).


@dataclass(frozen=True)
class Write:
    """One named write (writes.lua): ``op``, the keys it touches, its arguments."""

    op: str
    keys: tuple[str, ...]
    args: tuple[object, ...] = ()


# A raw Redis command: what adoption's two writes still are (``ledger.write`` names them).
Command = tuple[str, ...]


class Keys:
    """A script call's KEYS, each named once, so writes can name theirs by index (Lua's)."""

    def __init__(self, *fixed: str) -> None:
        self.names: list[str] = []
        self._at: dict[str, int] = {}
        for name in fixed:
            self.index(name)

    def index(self, name: str) -> int:
        if name not in self._at:
            self.names.append(name)
            self._at[name] = len(self.names)
        return self._at[name]

    def writes(self, writes: Sequence[Write]) -> bytes:
        """``writes`` as writes.lua takes them: JSON [[name, [key index...], [argument...]]]."""
        return orjson.dumps([[w.op, [self.index(key) for key in w.keys], list(w.args)]
                             for w in writes])

    def with_more(self, more: Sequence[str]) -> list[str]:
        """These keys and then ``more`` (the ones a read found the writes may touch)."""
        return [*self.names, *(name for name in dict.fromkeys(more) if name not in self._at)]


# The prefixes from which a script names a listing's current group's keys (declared.lua).
def _names(group: str, *families: str) -> list[str]:
    """The current tenant's keys of ``group`` in each of ``families`` (Keyspace names)."""
    keys = ks()
    return [getattr(keys, family) + group for family in families]


def group_prefixes() -> bytes:
    """The current tenant's prefixes of a group's scheduling keys, for scripts that build them."""
    keys = ks()
    return orjson.dumps({"pending": keys.PENDING, "dirty": keys.DIRTY, "settled": keys.SETTLED})
# Target-state fields a flush or sender may note (lb:target:{target}).
TARGET_FIELDS = ("paused", "paused_at", "blocked_until", "last_error", "last_error_at",
                 "token_expires_at", "budget:general", "budget:bulk")
# The code constants of the scripts that apply named writes (fenced, write, the sender's
# settle).
WRITE_NAMES: dict[str, LuaValue] = {
    "STAMP_FIELDS": _STAMP_FIELDS, "GROUP_FIELD": k.LISTING_FIELDS[0],
    "DISTRUSTED": orjson.dumps(asdict(DISTRUSTED)).decode(), "TARGET_FIELDS": TARGET_FIELDS,
    "HISTORY_MAXLEN": k.HISTORY_MAXLEN, "GROUP_HISTORY_MAXLEN": k.GROUP_HISTORY_MAXLEN,
    "STATS_TTL_S": k.STATS_TTL_S, "LATENCY_MAXLEN": k.LATENCY_MAXLEN,
    "TRACE_MAXLEN": k.TRACE_MAXLEN}

FENCED = load(__file__, "fenced.lua", WRITE_NAMES)
WRITE = load(__file__, "write.lua", WRITE_NAMES)
CLAIM = load(__file__, "claim.lua", {
    "FIELDS": FIELDS, "BODY_AT": FIELDS.index(BODY_FIELD) + 1, "BODY_FIELD": BODY_FIELD})
RENEW = load(__file__, "renew.lua")
FINISH = load(__file__, "finish.lua")
MARK_DUE = load(__file__, "mark_due.lua")

# How often a script that found an undeclared key is called again, its keys read afresh: a
# listing moves between groups rarely, so twice in a row means something is wrong.
MAX_READS = 5


class Undeclared(RuntimeError):
    """A script kept finding keys its caller had not declared, however often it read them."""


def group_keys(group: str) -> tuple[str, str, str]:
    """The keys of a group a change or an acceptance touches: lb:pending, lb:dirty, lb:settled."""
    keys = group_state.keys_of(group)
    return keys.pending, keys.dirty, keys.settled


async def declare_groups(redis: Redis, listing_keys: Sequence[str]) -> list[str]:
    """The keys of the current groups of these listings (by their hashes' keys)."""
    if not listing_keys:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for key in listing_keys:
            pipe.hget(key, k.LISTING_FIELDS[0])
        groups = await pipe.execute()
    return [key for g in dict.fromkeys(text(g) for g in groups if g is not None)
            for key in group_keys(g)]


def accepting(writes: Sequence[Write]) -> list[str]:
    """The listings' keys of the acceptances among ``writes`` (their first key)."""
    return [w.keys[0] for w in writes if w.op == "accepted"]


async def with_declared(call: Callable[[list[str]], Awaitable[Any]],
                        read: Callable[[], Awaitable[list[str]]]) -> Any:
    """``call(keys)`` with the keys ``read`` says its script may touch; while the script
    answers {'missing', key...} (it wrote nothing), read again and call again."""
    more = await read()
    missing: list[str] = []
    for _ in range(MAX_READS):
        answer = await call(more)
        found = _missing(answer)
        if found is None:
            return answer
        missing = found
        more = [*await read(), *missing]
    raise Undeclared(f"keys kept moving under a script: {', '.join(missing)}")


def _missing(answer: Any) -> list[str] | None:
    if (isinstance(answer, list) and answer and isinstance(answer[0], bytes | str)
            and text(answer[0]) == "missing"):
        return [text(name) for name in answer[1:]]
    return None


async def apply_writes(redis: Redis, writes: Sequence[Write]) -> None:
    """Apply named writes atomically, under no lease (an operator's): write.lua."""
    if any(w.op == "accepted" for w in writes):
        raise ValueError("a planned write's acceptance is recorded through a flush's fence")
    keys = Keys()
    payload = keys.writes(writes)
    script = Script(redis, WRITE)
    await with_declared(lambda more: script(keys=keys.with_more(more), args=[
        now_ms(), k.GROUP_IDLE_MS, group_prefixes(), payload]), _nothing)


async def _nothing() -> list[str]:
    return []


class Fence:
    """fenced.lua over one client: named writes applied only while a lease (a flush's group,
    a sender's target) holds the token."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._script = Script(redis, FENCED)

    async def __call__(self, lease_key: str, token: str, writes: Sequence[Write]) -> bool:
        keys = Keys(lease_key)
        payload = keys.writes(writes)
        listings = accepting(writes)
        answer = await with_declared(
            lambda more: self._script(keys=keys.with_more(more), args=[
                token, now_ms(), k.GROUP_IDLE_MS, group_prefixes(), payload]),
            lambda: declare_groups(self.redis, listings))
        return bool(int(answer))


class LeaseLost(Exception):
    """Another flush took the group: this one must stop calling portals and write nothing."""


async def mark_due(redis: Redis, groups: list[str], at_ms: int) -> None:
    """Make groups due now, as a change would: a flush running meanwhile keeps them due. What
    every target had settled is forgotten: the next flush plans the whole group (an operator's
    action, a resume, a repair: whatever was settled may need sending again)."""
    if groups:
        await Script(redis, MARK_DUE)(
            keys=[ks().DUE, *(key for g in groups for key in group_keys(g))],
            args=[at_ms, k.GROUP_IDLE_MS, *groups])
        await group_state.wake(redis)


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
    async def _fenced(self, writes: Sequence[Write]) -> bool: ...

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

    async def apply(self, writes: Sequence[Write]) -> None:
        """Apply ``writes`` atomically if the lease is still held; else LeaseLost."""
        if not writes:
            return
        if not await self._fenced(writes):
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

    async def _fenced(self, writes: Sequence[Write]) -> bool:
        return await self._flushes.fenced(self.claim, writes)


class Flushes:
    def __init__(self, redis: Redis, lease_ms: int, debounce: DebounceSettings,
                 targets: Sequence[str] = ()) -> None:
        """``targets``: the configured targets, whose settled changes claims leave out (none:
        every claim returns every member)."""
        self.targets = list(targets)
        self._window_ms = debounce.window_ms
        self._max_wait_ms = debounce.max_wait_ms
        self.redis = redis
        self._claim = Script(redis, CLAIM)
        self._renew = Script(redis, RENEW)
        self._fence = Fence(redis)
        self._finish = Script(redis, FINISH)
        self.lease_ms = lease_ms

    async def claim(self, group: str, now_ms: int) -> Claim | None:
        """The group's changes and desired state under a new lease; None while another flush
        holds it."""
        fixed = [ks().LEASE + group, ks().FENCE, ks().PENDING + group, ks().DUE, ks().FLUSHING,
                 ks().SETTLED + group, ks().DIRTY + group, ks().MEMBERS + group]
        raw = await with_declared(
            lambda members: self._claim(keys=[*fixed, *members], args=[
                group, now_ms, self.lease_ms, ks().LISTING, ks().BODY, *self.targets]),
            lambda: self._member_keys(group))
        if int(raw[0]) == 0:
            return None
        token, seq, first = str(raw[0]), text(raw[1]), text(raw[2])  # INCR: an integer
        planned, at = int(raw[3]), 4 + len(self.targets)
        settled = {t: int(v) if (v := text(raw[4 + i])) else None
                   for i, t in enumerate(self.targets)}
        step = 2 + len(FIELDS)
        end = at + planned * step
        listings = [_listing(group, text(raw[i]), raw[i + 2:i + step])
                    for i in range(at, end, step)]
        changed = {text(raw[i]): int(raw[i + 1]) for i in range(at, end, step)
                   if int(raw[i + 1])}
        listings.sort(key=lambda listing: listing.ref)
        others = sorted(text(ref) for ref in raw[end:])
        return Claim(group, token, seq, int(first) if first else None, listings, others,
                     changed, settled)

    async def _member_keys(self, group: str) -> list[str]:
        """The keys a claim reads and may write of each member: its hash and its body."""
        members = await self.redis.smembers(ks().MEMBERS + group)  # type: ignore[misc]
        return [key for ref in sorted(text(m) for m in members)
                for key in (ks().LISTING + ref, ks().BODY + ref)]

    @contextlib.asynccontextmanager
    async def leased(self, claim: Claim) -> AsyncIterator[Lease]:
        """The claim's lease, renewed in the background while the block runs."""
        lease = Lease(self, claim, self.lease_ms)
        async with kept(lease):
            yield lease

    async def renew(self, claim: Claim, lease_ms: int) -> bool:
        return bool(await self._renew(
            keys=[ks().LEASE + claim.group, ks().DUE, ks().FLUSHING],
            args=[claim.group, claim.token, now_ms(), lease_ms]))

    async def fenced(self, claim: Claim, writes: Sequence[Write]) -> bool:
        """Apply ``writes`` if the claim's lease is still held; False (nothing written) if not."""
        return await self._fence(ks().LEASE + claim.group, claim.token, writes)

    async def finish(self, claim: Claim, next_due_ms: int | None,
                     settled: Sequence[str] = ()) -> bool:
        """True if the group had no new changes; False if they arrived during the flush.
        ``settled``: the targets whose turn settled every change the claim held. Raises
        LeaseLost (and changes nothing) if another flush has taken the group."""
        due = -1 if next_due_ms is None else next_due_ms
        g = claim.group
        result = int(await self._finish(
            keys=[*_names(g, "LEASE"), ks().FLUSHING, *_names(g, "SETTLED", "DIRTY", "PENDING"),
                  ks().DUE],
            args=[g, claim.token, claim.seq, due, now_ms(), self._window_ms,
                  self._max_wait_ms, k.GROUP_IDLE_MS, orjson.dumps(list(settled)),
                  orjson.dumps(self.targets)]))
        if result < 0:
            raise LeaseLost(f"group {claim.group!r} was claimed by another flush")
        return bool(result)



def _listing(group: str, ref: str, values: Sequence[bytes | str | None]) -> DesiredListing:
    return decode_fields(ref, values) or bare_tombstone(ref, group)
