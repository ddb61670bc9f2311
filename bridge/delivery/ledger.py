"""What each target last accepted, and the delivery state around it: standing intents (keys in
flight), quarantine, held syncs, backoff, paused or rate-limited targets, and the history of
attempts. Key layout: ``bridge/constants.py``.

Each concern is a small store (:class:`AcceptedStore`, :class:`IntentStore`,
:class:`QuarantineStore`, :class:`HeldStore`, :class:`TargetStore`, :class:`FigureStore`), all
over one :class:`LedgerIO`, so one fence; :class:`Ledger` is every store at once, for callers.

Shared by the worker (writes) and the web side (reads, operator actions). A flush builds its
ledger over its :class:`~bridge.delivery.claims.Lease`: every write then takes effect only while
that flush still holds the group (fenced), atomically. Every write is a named one, checked in Lua
(``writes.lua``): through the lease's ``fenced.lua``, or ``write.lua`` for an operator's. The
actions that must match what the operator reviewed (release, discard) check it atomically in
Redis (``pinned.lua``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge import constants as k
from bridge import counters, group_state, stories
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.claims import (
    Acceptance,
    Command,
    LeaseLost,
    Stamp,
    Write,
    apply_writes,
    mark_due,
)
from bridge.delivery.idempotency import Intent
from bridge.delivery.results import FlushResult
from bridge.packing import pack, unpack
from bridge.replies import maybe_text, text
from bridge.scripts import Script, load
from bridge.settings import TraceSettings

log = logging.getLogger("bridge.delivery.ledger")

Cause = Literal["explicit", "inferred"]


@dataclass
class Accepted:
    digest: str
    payload: dict[str, Any] | None
    at: int


@dataclass
class Quarantined:
    digest: str
    group: str
    error_type: str
    message: str
    field: str | None
    since: int
    discarded: bool = False


@dataclass(frozen=True)
class Deletion:
    """One listing a group sync would delete, and why (contract §5: deletions by cause)."""

    ref: str
    cause: Cause
    reason: str


@dataclass
class Held:
    digest: str
    reason: str
    deletions: list[str]
    listings: int
    since: int
    unknown_on_portal: list[str] = field(default_factory=list)
    causes: list[dict[str, str]] = field(default_factory=list)  # Deletion as dicts, by ref


@dataclass
class Attempt:
    at: int
    target: str
    group: str
    operation: str
    listings: list[str]
    idempotency_key: str
    outcome: str
    status: int | None
    latency_ms: float
    attempt: int
    error: str = ""


class Fence(Protocol):
    """Where a flush's writes go: applied only while the flush holds its group."""

    async def apply(self, writes: Sequence[Write]) -> None: ...


class HeldChanged(Exception):
    """The held sync is not the one the operator reviewed (its digest differs)."""

    def __init__(self, current: Held) -> None:
        super().__init__(f"the held sync changed; it is now {current.digest}")
        self.current = current


# Release or discard a held change, checked against the one the operator reviewed.
PINNED = load(__file__, "pinned.lua")

# The field of lb:target:{target} holding a group-sync target's token expiry (Unix ms).
TOKEN_EXPIRES_AT = "token_expires_at"


def _load(raw: bytes | str | None) -> dict[str, Any] | None:
    return orjson.loads(unpack(raw)) if raw else None


def _packed(record: Accepted) -> str:
    """A group-sync record, whose payload the next syncs resend, as the ledger keeps it:
    packed (``bridge/packing.py``; ``_load`` reads both forms)."""
    return pack(orjson.dumps(asdict(record))).decode()


def _json(value: Any) -> str:
    return orjson.dumps(asdict(value) if hasattr(value, "__dataclass_fields__") else value
                        ).decode()


def accepted_key(target: str, group: str | None) -> str:
    # Per-listing targets keep one record per listing wherever it lives (a move between groups
    # changes nothing on such a portal); group-sync targets keep one set per group.
    return f"{ks().ACCEPTED}{target}" if group is None else f"{ks().ACCEPTED}{target}:{group}"


def _records_writes(key: str, records: dict[str, Accepted],
                    previous: dict[str, Accepted] | None) -> list[Write]:
    """The writes that leave exactly ``records`` in the hash ``key``: all of it afresh, or,
    knowing what it holds (``previous``), the records that differ and the refs that went."""
    if previous is None:
        writes = [Write("clear records", (key,))]
        changed = records
    else:
        writes = []
        gone = sorted(set(previous) - set(records))
        if gone:
            writes.append(Write("drop records", (key,), tuple(gone)))
        changed = {ref: record for ref, record in records.items()
                   if (held := previous.get(ref)) is not record and held != record}
    if changed:
        writes.append(Write("write records", (key,), tuple(
            x for ref, record in changed.items() for x in (ref, _packed(record)))))
    return writes


def compact(record: Accepted) -> Accepted:
    """A per-listing target's record as the ledger keeps it: digest and time."""
    return Accepted(record.digest, None, record.at)


def sync_scope(group: str) -> str:
    """The intent and quarantine entry of a whole group sync."""
    return k.GROUP_QUARANTINE + group


def trace_writes(entries: Iterable[tuple[str, dict[str, Any]]], ttl_ms: int) -> list[Write]:
    """Append each (ref, entry) to that listing's story (``lb:trace:{ref}``), in the order
    given (the last is the newest), capped at TRACE_MAXLEN, expiring ``ttl_ms`` after it."""
    by_ref: dict[str, list[str]] = {}
    for ref, entry in entries:
        by_ref.setdefault(ref, []).append(stories.pack(entry))
    return [Write("trace", (ks().TRACE + ref,), (str(ttl_ms), *items))
            for ref, items in by_ref.items()]


def counter_writes(commands: Iterable[Command]) -> list[Write]:
    """``bridge/counters.py``'s increments of lb:metrics (HINCRBY: counts; HINCRBYFLOAT: a
    histogram's sums) as the named writes "count" and "sum"."""
    pairs: dict[str, list[str]] = {"count": [], "sum": []}
    for command in commands:
        name, key, field_, by = command
        if key != ks().METRICS or name not in ("HINCRBY", "HINCRBYFLOAT"):
            raise ValueError(f"not a counter's increment: {command!r}")
        pairs["count" if name == "HINCRBY" else "sum"] += [field_, by]
    return [Write(op, (ks().METRICS,), tuple(args)) for op, args in pairs.items() if args]


def noted(command: Command | None) -> list[Write]:
    """A target-state HSET (``budget.command``'s) as the named write "note"."""
    if command is None:
        return []
    name, key, *pairs = command
    if name != "HSET" or not key.startswith(ks().TARGET):
        raise ValueError(f"not a note of a target's state: {command!r}")
    return [Write("note", (key,), tuple(pairs))]


def call_entry(entry: Attempt) -> dict[str, Any]:
    """A portal call as each listing it carried tells it."""
    return {"kind": "call", "at": entry.at, "target": entry.target, "group": entry.group,
            "operation": entry.operation, "idempotency_key": entry.idempotency_key,
            "status": entry.status, "outcome": entry.outcome, "error": entry.error,
            "latency_ms": entry.latency_ms, "attempt": entry.attempt}


async def write(redis: Redis, fence: Fence | None, writes: Sequence[Write]) -> None:
    """Apply named ``writes`` atomically: through ``fence`` (a flush's lease) when there is
    one. Acceptances ("accepted") are a flush's alone: they check what it planned."""
    if fence is not None:
        await fence.apply(writes)
    elif writes:
        await apply_writes(redis, writes)


class LedgerIO:
    """The one way the ledger's stores reach Redis: their reads, and their writes, each applied
    atomically through the same ``fence`` (a flush's lease) when there is one."""

    def __init__(self, redis: Redis, fence: Fence | None, trace_ttl_ms: int) -> None:
        self.redis = redis
        self.fence = fence
        self.trace_ttl_ms = trace_ttl_ms
        self.pinned = Script(redis, PINNED)

    async def write(self, *writes: Write) -> None:
        await write(self.redis, self.fence, writes)

    async def read_json_hash(self, key: str, refs: list[str] | None
                             ) -> dict[str, dict[str, Any]]:
        """Fields of a hash of JSON values: all of them, or just ``refs`` (absent ones left out)."""
        if refs is None:
            items = [(text(r), v) for r, v in (await self.redis.hgetall(key)).items()]  # type: ignore[misc]
        else:
            values = await self.redis.hmget(key, refs) if refs else []  # type: ignore[misc]
            items = list(zip(refs, values, strict=True))
        return {ref: data for ref, v in items if (data := _load(v))}


class Store:
    """One part of the ledger, over the :class:`LedgerIO` (and so the fence) it shares with
    the others."""

    def __init__(self, io: LedgerIO) -> None:
        self.io = io

    @property
    def redis(self) -> Redis:
        return self.io.redis

    @property
    def fence(self) -> Fence | None:
        return self.io.fence

    @property
    def trace_ttl_ms(self) -> int:
        return self.io.trace_ttl_ms

    async def _write(self, *writes: Write) -> None:
        await self.io.write(*writes)

    async def _read_json_hash(self, key: str, refs: list[str] | None
                              ) -> dict[str, dict[str, Any]]:
        return await self.io.read_json_hash(key, refs)

    async def apply(self, writes: Sequence[Write]) -> None:
        """Other writes that must go with the ledger's (through its fence), atomically."""
        if writes:
            await self._write(*writes)


class AcceptedStore(Store):
    """What each target accepted, and when each group was last checked against its portal."""

    async def accepted(self, target: str, group: str | None,
                       refs: list[str] | None = None) -> dict[str, Accepted]:
        records = await self._read_json_hash(accepted_key(target, group), refs)
        return {ref: Accepted(**data) for ref, data in records.items()}

    async def record_accepted(self, target: str, ref: str, record: Accepted,
                              planned: Stamp | None = None, key: str | None = None) -> None:
        """The target accepted this listing's write: it holds ``record`` now; the intent is
        settled and any quarantine of the listing is over. Only the digest and time are
        kept: a per-listing target's payload is never sent again from the ledger (a group
        sync's is: ``record_sync`` keeps those). ``planned``: the stamp of the desired state a
        flush planned the write from (then its intent ``key`` alone is settled, and a listing
        that moved on since is marked changed again: ``accepted.lua``)."""
        recorded = Write("record accepted", (accepted_key(target, None), ks().QUARANTINE + target),
                         (ref, _json(compact(record))))
        if planned is None:
            await self._write(recorded, Write("settle intents", (ks().INTENT + target,), (ref,)))
            return
        await self._write(recorded, Acceptance(ref, planned, target, key).write())

    async def record_sync(self, target: str, group: str, digest: str,
                          records: dict[str, Accepted], fresh: list[str],
                          epoch: str | None = None,
                          previous: dict[str, Accepted] | None = None,
                          planned: dict[str, Stamp] | None = None,
                          keep_held: bool = False) -> None:
        """A group sync was accepted: the group on the portal is now exactly ``records`` (so
        verified in ``epoch``); the listings sent with their current content (``fresh``) are
        out of quarantine. ``previous``: the group's records as read under the same lease;
        then only what changed is written (a one-listing change in a large group rewrites one
        record, not all of them). ``planned``: the stamps the fresh listings were planned
        from (a flush's sync): one that moved on since is marked changed again. ``keep_held``:
        the sync kept listings whose deletion the guards hold, so the held change stays."""
        writes = _records_writes(accepted_key(target, group), records, previous)
        if not keep_held:
            writes.append(_unhold(target, group))
        writes += [
            Write("sync digest", (f"{ks().SYNC_DIGEST}{target}:{group}",), (digest,)),
            Write("settle intents", (ks().INTENT + target,), (sync_scope(group),)),
            Write("unquarantine", (ks().QUARANTINE + target,), (*fresh, sync_scope(group))),
        ]
        if epoch is not None:
            writes.append(Write("verify", (ks().VERIFIED + target,), (group, epoch)))
        writes += [Acceptance(ref, stamp).write() for ref, stamp in (planned or {}).items()]
        await self._write(*writes)

    async def mark_verified(self, target: str, group: str, epoch: str) -> None:
        """The group was checked against the portal (or written whole) in ``epoch``."""
        await self._write(Write("verify", (ks().VERIFIED + target,), (group, epoch)))

    async def unverify(self, target: str, group: str) -> None:
        """The group's next sync must read the portal first (it holds something unknown)."""
        await self._write(Write("unverify", (ks().VERIFIED + target,), (group,)))

    async def verified(self, target: str, group: str) -> str | None:
        """The epoch in which the group was last checked against the portal (or synced)."""
        return maybe_text(await self.redis.hget(f"{ks().VERIFIED}{target}", group))  # type: ignore[misc]

    async def sync_digest(self, target: str, group: str) -> str | None:
        return maybe_text(await self.redis.get(f"{ks().SYNC_DIGEST}{target}:{group}"))


class IntentStore(Store):
    """The key of each write in flight (``lb:intent:{target}``)."""

    async def intents(self, target: str, scopes: list[str]) -> dict[str, Intent]:
        records = await self._read_json_hash(f"{ks().INTENT}{target}", scopes)
        return {scope: Intent(**data) for scope, data in records.items()}

    async def intend(self, target: str, intents: dict[str, Intent]) -> None:
        """Record new intents before their calls go out, so a retry finds their keys."""
        await self.apply(intend_writes(target, intents))

    async def distrust(self, target: str, scope: str) -> None:
        """A write for ``scope`` may have reached the portal after another flush moved on: an
        intent no content matches makes the next flush send the desired content again."""
        await self._write(Write("distrust", (ks().INTENT + target,), (scope,)))


class QuarantineStore(Store):
    """Writes a target refused, skipped until their content changes or an operator retries."""

    async def quarantined(self, target: str, refs: list[str] | None = None
                          ) -> dict[str, Quarantined]:
        records = await self._read_json_hash(f"{ks().QUARANTINE}{target}", refs)
        return {ref: Quarantined(**data) for ref, data in records.items()}

    async def quarantine(self, target: str, entries: dict[str, Quarantined],
                         settled: Sequence[str] = ()) -> None:
        """The target refused these writes: nothing changed there, so their intents (and the
        ``settled`` ones, such as the refused sync's) are over; each entry stays quarantined
        until its content changes or an operator retries."""
        if entries:
            await self._write(
                Write("quarantine", (ks().QUARANTINE + target,),
                      tuple(x for ref, entry in entries.items() for x in (ref, _json(entry)))),
                Write("settle intents", (ks().INTENT + target,), (*entries, *settled)),
            )

    async def retry_quarantined(self, target: str, refs: list[str]) -> None:
        """An operator asks for a fresh attempt: a new intent, so a new key (the portal would
        replay its stored refusal for the old one)."""
        if refs:
            await self._write(Write("unquarantine", (ks().QUARANTINE + target,), tuple(refs)),
                              Write("settle intents", (ks().INTENT + target,), tuple(refs)))

    async def discard_quarantine(self, target: str, refs: list[str]) -> int:
        """Keep skipping these versions, but take them off the problem list."""
        entries = await self.quarantined(target, refs)
        for entry in entries.values():
            entry.discarded = True
        if entries:
            await self._write(Write("quarantine", (ks().QUARANTINE + target,), tuple(
                x for ref, e in entries.items() for x in (ref, _json(e)))))
        return len(entries)


class HeldStore(Store):
    """Changes held for an operator (the guards' verdicts), and the operator's release or
    discard of them."""

    async def held(self, target: str) -> dict[str, Held]:
        raw = await self.redis.hgetall(f"{ks().HELD}{target}")  # type: ignore[misc]
        return {text(g): Held(**orjson.loads(v)) for g, v in raw.items()}

    async def held_of(self, target: str, group: str) -> Held | None:
        raw = await self.redis.hget(f"{ks().HELD}{target}", group)  # type: ignore[misc]
        return Held(**orjson.loads(raw)) if raw else None

    async def hold(self, target: str, group: str, entry: Held) -> None:
        """Hold a sync for an operator. A release given for an earlier held sync no longer
        applies: the operator must review this one."""
        await self._write(Write("hold", (ks().HELD + target, f"{ks().RELEASE}{target}:{group}"),
                                (group, _json(entry))))

    async def unhold(self, target: str, group: str) -> None:
        """The target holds the group's change no more (done, or no longer held): its entry
        and any release of it go."""
        await self._write(_unhold(target, group))

    async def release(self, targets: str | Sequence[str], group: str, digest: str
                      ) -> Held | None:
        """The operator lets the held change they reviewed (``digest``) go out, on each of
        ``targets`` that holds it. None when none holds anything; HeldChanged (nothing done)
        when one holds another change now."""
        return await self._pinned_action("release", targets, group, digest)

    async def discard(self, targets: str | Sequence[str], group: str, digest: str
                      ) -> Held | None:
        """The operator refuses the held change they reviewed, on each of ``targets`` that
        holds it: it is not sent until the group changes (then it is judged afresh)."""
        return await self._pinned_action("discard", targets, group, digest)

    async def _pinned_action(self, action: str, targets: str | Sequence[str], group: str,
                             digest: str) -> Held | None:
        names = [targets] if isinstance(targets, str) else list(targets)
        seq = await group_state.seq(self.redis, group)
        keys = [key for t in names for key in (
            ks().HELD + t, f"{ks().RELEASE}{t}:{group}", f"{ks().DISCARDED}{t}:{group}")]
        answer = await self.io.pinned(keys=keys, args=[group, digest, action, seq,
                                                     k.GROUP_IDLE_MS, *names])
        if int(answer[0]) == 0:
            return None
        held = Held(**orjson.loads(answer[1]))
        if int(answer[0]) == 1:
            raise HeldChanged(held)
        return held

    async def released_digest(self, target: str, group: str) -> str | None:
        marker = _load(await self.redis.get(f"{ks().RELEASE}{target}:{group}"))
        return str(marker["digest"]) if marker else None

    async def discarded(self, target: str, group: str) -> tuple[str, str] | None:
        """The digest an operator discarded and the group's change counter at that moment."""
        marker = _load(await self.redis.get(f"{ks().DISCARDED}{target}:{group}"))
        return (str(marker["digest"]), str(marker["seq"])) if marker else None

    async def forget_discard(self, target: str, group: str) -> None:
        await self._write(Write("forget discard", (f"{ks().DISCARDED}{target}:{group}",)))


class TargetStore(Store):
    """Each target's state (paused, rate-limited, its budgets) and its groups' backoff."""

    async def backoff(self, target: str, group: str) -> tuple[int, int]:
        key = f"{ks().BACKOFF}{target}:{group}"
        attempts, not_before = await self.redis.hmget(key, ["attempts", "not_before"])  # type: ignore[misc]
        return int(attempts or 0), int(not_before or 0)

    async def set_backoff(self, target: str, group: str, attempts: int, not_before: int,
                          reason: str) -> None:
        keys = ks()
        await self._write(Write("back off", (f"{keys.BACKOFF}{target}:{group}",
                                            keys.TARGET + target),
                                (str(attempts), str(not_before), reason, str(now_ms()))))

    async def clear_backoff(self, target: str, group: str) -> None:
        await self._write(Write("clear backoff", (f"{ks().BACKOFF}{target}:{group}",)))

    async def target_state(self, target: str) -> dict[str, str]:
        raw = await self.redis.hgetall(f"{ks().TARGET}{target}")  # type: ignore[misc]
        return {text(f): text(v) for f, v in raw.items()}

    async def pause(self, target: str, reason: str) -> None:
        await self._write(_note(target, paused=reason, paused_at=now_ms()))

    async def resume(self, target: str) -> None:
        """Clear the pause and make every group due: their changes flow now."""
        # its outbox too (an empty one is dropped by the sender)
        keys = ks()
        await self._write(Write("resume", (keys.TARGET + target, keys.SENDERS),
                                (target, str(now_ms()))))
        groups = [g for g in (text(g) for g in await self.redis.smembers(ks().GROUPS)) if g]  # type: ignore[misc]
        await mark_due(self.redis, groups, now_ms())
        # A turn now, groups or none: the outbox and the checks the pause held are due too.
        await group_state.wake(self.redis)

    async def block_until(self, target: str, until_ms: int, reason: str) -> None:
        await self._write(_note(target, blocked_until=until_ms, last_error=reason))

    async def note(self, target: str, **fields: str | int) -> None:
        if fields:
            await self._write(_note(target, **fields))


class FigureStore(Store):
    """The history of portal calls, listings' stories, and the flush counters."""

    async def record_attempt(self, entry: Attempt, latencies_ms: list[int],
                             traced: Sequence[str] | None = None) -> None:
        """Record a portal call: in the history, the per-minute figures, and the story of each
        listing in ``traced`` (by default the attempt's own ``listings``)."""
        await self._write(*attempt_writes(entry, latencies_ms, self.trace_ttl_ms, traced))

    async def trace(self, entries: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Append (ref, entry) pairs to listings' stories: one write, nothing when empty."""
        if entries:
            await self._write(*trace_writes(entries, self.trace_ttl_ms))

    async def record_flush(self, result: str, seconds: float) -> None:
        """Count a flush by result and time it. Never fenced (a flush that lost its lease
        counts too), and never fails the flush: the figures are not worth an error."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:  # one slot, no MULTI
                for command in (counters.count(counters.FLUSHES, result),
                                *counters.observe(counters.FLUSH_DURATION, [seconds])):
                    pipe.execute_command(*command)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.debug("flush not counted: %s", exc)

    async def history(self, group: str | None = None, limit: int = 100) -> list[Attempt]:
        key = ks().HISTORY if group is None else f"{ks().HISTORY}:{group}"
        raw = await self.redis.lrange(key, 0, limit - 1)  # type: ignore[misc]
        return [Attempt(**orjson.loads(v)) for v in raw]


class Ledger(AcceptedStore, IntentStore, QuarantineStore, HeldStore, TargetStore, FigureStore):
    """Every store at once, over one :class:`LedgerIO`: the facade the flush, the sender and
    the operator's side use."""

    def __init__(self, redis: Redis, fence: Fence | None = None,
                 trace_ttl_ms: int | None = None) -> None:
        """``trace_ttl_ms``: how long listings' stories are kept ([trace] retention_days)."""
        super().__init__(LedgerIO(redis, fence, trace_ttl_ms or TraceSettings().retention_ms))

    def fenced(self, fence: Fence) -> Ledger:
        """This ledger with every write going through ``fence``."""
        return Ledger(self.redis, fence, self.trace_ttl_ms)


def intend_writes(target: str, intents: dict[str, Intent]) -> list[Write]:
    """The write that records new intents (see :meth:`Ledger.intend`)."""
    if not intents:
        return []
    return [Write("record intents", (ks().INTENT + target,),
                  tuple(x for scope, i in intents.items() for x in (scope, _json(i))))]


def _unhold(target: str, group: str) -> Write:
    return Write("unhold", (ks().HELD + target, f"{ks().RELEASE}{target}:{group}"), (group,))


def _note(target: str, **fields: str | int) -> Write:
    return Write("note", (ks().TARGET + target,),
                 tuple(str(x) for item in fields.items() for x in item))


def token_expiry(target: str, expires: int) -> Write:
    """A group-sync target's OAuth token expiry, noted (TOKEN_EXPIRES_AT)."""
    return _note(target, **{TOKEN_EXPIRES_AT: expires})


def attempt_writes(entry: Attempt, latencies_ms: list[int], trace_ttl_ms: int,
                   traced: Sequence[str] | None = None, counted: bool = True
                   ) -> list[Write]:
    """The writes that record a portal call (see :meth:`Ledger.record_attempt`). A bulk
    records one entry per group it carried; only one of them (``counted``) counts the call
    in the per-minute figures and the Prometheus totals."""
    increments = counters.observe(counters.DELIVERY_LATENCY, [ms / 1000 for ms in latencies_ms],
                                  entry.target)
    writes = [Write("history", (ks().HISTORY, f"{ks().HISTORY}:{entry.group}"), (_json(entry),))]
    if counted:
        writes.append(Write("per minute", (f"{ks().STATS}{entry.at // 60_000}",),
                            (entry.target, entry.outcome)))
        increments += [counters.count(counters.PORTAL_REQUESTS, entry.target, entry.operation,
                                      entry.outcome),
                       *counters.observe(counters.PORTAL_DURATION, [entry.latency_ms / 1000],
                                         entry.target, entry.operation)]
    writes += counter_writes(increments)
    if latencies_ms:
        writes.append(Write("latency", (ks().LATENCY,), tuple(str(ms) for ms in latencies_ms)))
    call = call_entry(entry)
    return writes + trace_writes(((ref, call) for ref in (
        entry.listings if traced is None else traced)), trace_ttl_ms)


class Flushing(Protocol):
    """A flush, as :func:`counted_flush` sees it: its ledger reaches Redis."""

    @property
    def ledger(self) -> Ledger: ...


FlushT = TypeVar("FlushT", bound=Flushing)


def counted_flush(run: Callable[[FlushT], Awaitable[FlushResult]]
                  ) -> Callable[[FlushT], Coroutine[Any, Any, FlushResult]]:
    """Count and time each run of a flush (``GroupFlush.run``): done, more_to_do (its
    :class:`FlushResult` says which), lease_lost, error, cancelled (the job's timeout)."""
    @functools.wraps(run)
    async def counted(flush: FlushT) -> FlushResult:
        started = time.monotonic()
        result = "error"
        try:
            answer = await run(flush)
            result = answer.outcome.counted_as
            return answer
        except LeaseLost:
            result = "lease_lost"
            raise
        except asyncio.CancelledError:
            result = "cancelled"
            raise
        finally:
            await flush.ledger.record_flush(result, time.monotonic() - started)

    return counted
