"""Durable storage of accepted events, and their folding into the desired state.

Two Lua scripts, each in its own file. The webhook's (``accept.lua``, one round trip per
webhook, here) dedupes by webhook id and appends the event to the inbox (``lb:inbox``): durable,
in arrival order. The workers' (``fold.lua``, ``bridge/ingest/inbox.py``) takes the inbox's
oldest events and, one by one in that order, orders each listing's changes (version, then
occurred_at; at equal times the later arrival wins, unless it is a redelivery of an event that
set the listing at that time; nothing from before a snapshot that deleted the listing counts),
folds the event into the desired state of its listings and groups, records why a listing was
deleted, marks the groups due for a flush (trailing debounce capped by max wait, from the time
the event was received) and appends the event to the story of each listing it names
(``lb:trace:{ref}``: applied, stale or duplicate). Every event is judged as of its receipt,
however late it is folded: a compacted tombstone orders the events received until its expiry,
and the fold removes it only once no event received before then can still be folded. Key layout:
``bridge/constants.py``.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
import redis
from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from bridge import constants as k
from bridge import counters, tenancy
from bridge.connections import Durability
from bridge.constants import ks
from bridge.ingest.admission import MemoryGauge, StorageFull
from bridge.ingest.cluster_client import ClusterScripts
from bridge.ingest.events import ValidEvent
from bridge.ingest.script_client import ScriptBatcher, StorageUnavailable
from bridge.scripts import load
from bridge.settings import (
    DebounceSettings,
    RetentionSettings,
    TraceSettings,
    WebhookSettings,
)

# What the accept script puts before a redelivery's entry (no msgpack array starts with it).
DUPLICATE = b"D"

# The webhook's script (accept.lua): dedupe, then keep the event in the inbox for the workers
# to fold. Its keys are all known before the call (webhook id, minute of receipt): four, in
# KEYS, packed with its arguments in one step (``AcceptCall``).
ACCEPT = load(__file__, "accept.lua", {
    "DUPLICATE": DUPLICATE.decode(), "STATS_TTL": k.STATS_TTL_S,
    "EVENT_DUPLICATE": counters.WEBHOOK_EVENTS.field("duplicate"),
})


def accept_keys(webhook_id: str, now_ms: int) -> list[str]:
    """accept.lua's KEYS: the dedupe marker, the inbox, the minute's stats, the metrics (the
    current tenant's), and the schedulers' wake set."""
    keys = ks()
    return [keys.SEEN + webhook_id, keys.INBOX, f"{keys.STATS}{now_ms // 60_000}", keys.METRICS,
            k.WAKE]


def accept_args(now_ms: int, entry: bytes, dedupe_ttl_s: int,
                max_inbox: int | None = None) -> list[bytes | int | str]:
    """accept.lua's ARGV: received at, the entry, the marker's lifetime, the tenant, the
    inbox's ceiling."""
    args: list[bytes | int | str] = [now_ms, entry, dedupe_ttl_s, tenancy.current()]
    return args if max_inbox is None else [*args, max_inbox]


def accept_now(r: redis.Redis, webhook_id: str, now_ms: int, entry: bytes,
               dedupe_ttl_s: int, max_inbox: int | None = None) -> int:
    """Run accept.lua on a synchronous client (tools, tests): 1 stored, 0 duplicate, 2 full."""
    script = r.register_script(ACCEPT.source)
    status, _ = script(keys=accept_keys(webhook_id, now_ms),
                       args=accept_args(now_ms, entry, dedupe_ttl_s, max_inbox))
    return int(status)


@dataclass(frozen=True)
class Stored:
    duplicate: bool


# What redis-py's cluster client (5.3) raises mid-failover besides RedisError: no node answers
# (RedisClusterException), or one request's failover closed the connections under the others
# ("the handler is closed", a slot map changed while read, a closed transport). Each is an
# outage to answer 503 to, never a 500.
CLUSTER_TROUBLE: tuple[type[Exception], ...] = (RedisClusterException, RuntimeError,
                                                AttributeError)
# What a count that never fails the answer lets pass.
QUIET: tuple[type[Exception], ...] = (RedisError, OSError, *CLUSTER_TROUBLE)


class Wakes:
    """The webhook's wake-ups on a cluster, group-committed per tenant: each request's ZADD
    goes out after its event is stored, and the requests whose events were stored while one
    was in flight share the next (one round trip to lb:{wake}'s master per batch, not per
    event: the cluster benchmark's extra cost was largely these)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._next: dict[str, asyncio.Future[None]] = {}  # tenant -> the next ZADD's waiters
        self._running: set[str] = set()

    async def wake(self, tenant: str) -> None:
        waiting = self._next.get(tenant)
        if waiting is None:
            waiting = self._next[tenant] = asyncio.get_running_loop().create_future()
            if tenant not in self._running:  # no await since the runner's last look
                self._running.add(tenant)
                asyncio.get_running_loop().create_task(self._run(tenant))
        await asyncio.shield(waiting)

    async def _run(self, tenant: str) -> None:
        try:
            while (waiting := self._next.pop(tenant, None)) is not None:
                try:
                    await self._redis.zadd(k.WAKE, {tenant: 0})
                except BaseException as exc:  # each waiter answers 503; the CRM retries
                    waiting.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                else:
                    waiting.set_result(None)
        finally:
            self._running.discard(tenant)


class EventStore:
    """Writes accepted events to Redis; the worker side reads the state they fold into. Refuses
    them (``StorageFull``) once Redis nears the ceilings of ``[webhook]`` (bridge/ingest/
    admission.py)."""

    def __init__(self, redis: Redis, url: str, webhook: WebhookSettings,
                 debounce: DebounceSettings,
                 prepare: Callable[[], Awaitable[Durability]] | None = None,
                 trace: TraceSettings | None = None,
                 retention: RetentionSettings | None = None,
                 cluster: ClusterScripts | None = None) -> None:
        """``prepare`` runs on every (re)connect of the script client and says what a stored
        event must wait for (``bridge.connections.RedisCheck``). ``debounce``, ``trace`` and
        ``retention`` are the fold's (bridge/ingest/inbox.py): storing needs none of them.
        ``cluster``: on a Redis Cluster, the script client of each master (``redis`` is then
        the cluster's client), and the tenant is woken apart."""
        self._redis = redis
        self._cluster = cluster
        self._wakes = Wakes(redis)
        self._script = ScriptBatcher(url, ACCEPT, prepare=prepare, keys=5) if cluster is None \
            else None
        self._dedupe_ttl_s = webhook.dedupe_ttl_seconds
        self._calls: dict[str, AcceptCall] = {}  # per tenant: its names are packed in
        self._unstored = 0  # events answered 503 and not counted in Redis yet
        self._max_inbox = webhook.max_inbox_events
        self.memory = MemoryGauge(redis, webhook.max_memory_share)

    async def put(self, webhook_id: str, event: ValidEvent, now_ms: int) -> Stored:
        if self.memory.full():
            raise StorageFull(f"Redis's used_memory has reached {self.memory.ceiling:.0%} of "
                              "its maxmemory ([webhook] max_memory_share): events wait until "
                              "the workers fold the inbox")
        call = self._call()
        arguments = call.pack(webhook_id, now_ms, event)
        try:
            if self._cluster is None:
                assert self._script is not None
                status, _ = await self._script.call_packed(call.count, arguments)
            else:
                status = await self._cluster_put(call, arguments)
        except (RedisError, OSError):
            self._unstored += 1  # the webhook answers 503; counted once Redis is back
            raise
        if status == 2:
            raise StorageFull(f"the inbox holds [webhook] max_inbox_events "
                              f"({self._max_inbox}) events: events wait until the workers "
                              "fold it")
        self.memory.stored(len(arguments))
        if self._unstored:
            await self._count_unstored()
        return Stored(duplicate=status == 0)

    async def _cluster_put(self, call: AcceptCall, arguments: bytes) -> int:
        assert self._cluster is not None
        try:
            status, _ = await self._cluster.call_packed(call.count, arguments, call.slot)
            # Durable on the tenant's master (its WAITAOF answered): now its turn, in
            # lb:{wake}'s slot. Lost with this process? No 2xx went out: the CRM redelivers
            # and the duplicate wakes it.
            await self._wakes.wake(tenancy.current())
        except CLUSTER_TROUBLE as exc:
            raise StorageUnavailable(f"the Redis Cluster's client failed ({exc!r}); retry "
                                     "later") from exc
        return int(status)

    def _call(self) -> AcceptCall:
        """The current tenant's accept call."""
        tenant = tenancy.current()
        call = self._calls.get(tenant)
        if call is None:
            call = self._calls[tenant] = AcceptCall(self._dedupe_ttl_s, self._max_inbox,
                                                    wake=self._cluster is None)
        return call

    async def aclose(self) -> None:
        await self.memory.aclose()
        if self._script is not None:
            await self._script.aclose()
        if self._cluster is not None:
            await self._cluster.aclose()

    async def count_rejection(self, reason: str, now_ms: int) -> None:
        """Count a refused request by reason, for the dashboard; never fails the answer."""
        key = f"{ks().STATS}{now_ms // 60_000}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(key, f"rejected:{reason}", 1)
                pipe.expire(key, k.STATS_TTL_S)
                pipe.hincrby(ks().METRICS, counters.WEBHOOK_REJECTIONS.field(reason), 1)
                await pipe.execute()
        except QUIET:
            pass

    async def _count_unstored(self) -> None:
        """Redis stores events again: add the ones refused meanwhile to the cumulative count
        (not the per-minute stats: their minutes are gone)."""
        unstored, self._unstored = self._unstored, 0
        try:
            await self._redis.hincrby(ks().METRICS, counters.WEBHOOK_REJECTIONS.field(  # type: ignore[misc]
                "storage_unavailable"), unstored)
        except QUIET:
            self._unstored += unstored


# The entry's kind: the event's type, in a letter (created and updated are both upserts).
_KIND = {"listing.created": "c", "listing.updated": "u", "listing.deleted": "d",
         "group.snapshot": "s"}
# msgpack, the one structured format both Python and Redis's Lua (cmsgpack) read; every value a
# string (cmsgpack reads no binary type), as the scripts compare them.
_ENTRY = msgspec.msgpack.Encoder()
_STR32 = struct.Struct(">BI").pack
_READ = msgspec.msgpack.Decoder(list[str])


def entry(webhook_id: str, now_ms: int, event: ValidEvent) -> bytes:
    """The event as the inbox keeps it: webhook id, received at, kind, group, occurred_at
    (ms), then ref, version (-1: none), body for each listing."""
    fields: list[str | msgspec.Raw] = [webhook_id, str(now_ms), _KIND[event.type], event.group,
                                       str(event.occurred_ms)]
    for ref, version, body in event.listings:
        fields += (ref, str(version), _as_str(body))
    return _ENTRY.encode(fields)


def _as_str(utf8: bytes) -> msgspec.Raw:
    """Validated UTF-8 as a msgpack str, as it is: decoding it to write it back costs ~1.3 µs
    a listing (a str32 header is valid msgpack at any length)."""
    return msgspec.Raw(_STR32(0xDB, len(utf8)) + utf8)


def received_at(stored: bytes) -> int:
    """When the webhook received an inbox entry (a redelivery's too)."""
    fields = _READ.decode(stored[1:] if stored[:1] == DUPLICATE else stored)
    return int(fields[1])


class AcceptCall:
    """accept.lua's KEYS and ARGV for one event, packed as RESP bulk strings in one format
    step (the webhook's hot path): what is the same on every call is packed once."""

    def __init__(self, dedupe_ttl_s: int, max_inbox: int | None = None,
                 wake: bool = True) -> None:
        """For the current tenant (its key names and name are packed once); ``wake``: the
        script wakes the tenant itself (not on a cluster, where lb:wake is in another slot)."""
        keys = ks()
        tail: list[bytes] = [b"%d" % dedupe_ttl_s, tenancy.current().encode()]
        if max_inbox is not None:
            tail.append(b"%d" % max_inbox)
        self.keys = 5 if wake else 4
        self.count = self.keys + 2 + len(tail)  # keys, then received at, entry, and the tail
        self.slot = key_slot(keys.INBOX.encode())
        seen, stats = (_escaped(prefix.encode()) for prefix in (keys.SEEN, keys.STATS))
        self._format = (b"$%d\r\n" + seen + b"%s\r\n" + _escaped(_bulk(keys.INBOX))
                        + b"$%d\r\n" + stats + b"%s\r\n" + _escaped(_bulk(keys.METRICS))
                        + (_escaped(_bulk(k.WAKE)) if wake else b"")
                        + b"$%d\r\n%s\r\n$%d\r\n%s\r\n"
                        + _escaped(b"".join(_bulk(value) for value in tail)))
        self._seen, self._stats = len(keys.SEEN.encode()), len(keys.STATS.encode())

    def pack(self, webhook_id: str, now_ms: int, event: ValidEvent) -> bytes:
        """KEYS (accept_keys) and ARGV (accept_args) for ``event``, ``count`` bulk strings."""
        webhook, now, packed = webhook_id.encode(), b"%d" % now_ms, entry(webhook_id, now_ms,
                                                                          event)
        minute = b"%d" % (now_ms // 60_000)
        return self._format % (self._seen + len(webhook), webhook, self._stats + len(minute),
                               minute, len(now), now, len(packed), packed)


def _bulk(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _escaped(data: bytes) -> bytes:
    """``data`` as literal text of a %-format."""
    return data.replace(b"%", b"%%")
