"""Turns due work into arq jobs, tenant by tenant: the webhook's inbox into state, due groups
into flushes and due outboxes into sends (``Scheduler``), and due reconciliation checks into
``reconcile_group`` jobs (``ReconcileScheduler``). Every worker runs one; any number may run at
once. A tenant takes a turn only when it has work (``lb:wake``): the webhook's script wakes it,
as do a job's end and an operator's action; each turn ends by setting when the tenant next has
work (its due groups, outboxes, checks, tombstones), unless something woke it meanwhile.

Taking a due group bumps its score a little, atomically, so the other workers' schedulers do not
enqueue it again meanwhile. Job ids are arq's own: what keeps a group to one flush at a time is
the flush's lease (``bridge/delivery/claims.py``), not the job id, so a job left behind by a
killed worker never blocks the next flush of its group. A check is kept to one at a time the
same way, by its lock (``bridge/reconcile/records.py``) and the ticket it is taken with.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import orjson
from arq.connections import ArqRedis
from redis.asyncio import Redis

from bridge import constants as k
from bridge import tenancy
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.reconcile import schedule
from bridge.replies import text
from bridge.scripts import Script, load
from bridge.settings import Settings
from workers.jobs import is_connection_failure
from workers.tenants import Runtime, Runtimes

log = logging.getLogger("workers.scheduler")

TAKE_DUE = load(__file__, "take_due.lua")  # due groups, or due outboxes
TAKE_TURNS = load(__file__, "take_turns.lua")  # the tenants whose turn is due
END_TURN = load(__file__, "end_turn.lua")
NEXT_DUE = load(__file__, "next_due.lua")  # when a tenant next has work

# A tenant's turn is taken again this long after it started, if it did not end (its worker
# died); at most this many turns a tick.
TURN_LEASE_MS = 5_000
TURNS_PER_TICK = 500
# On a cluster every configured tenant gets a turn this often, whatever woke it or did not.
CLUSTER_WAKE_ALL_S = 600.0
# Workers whose heartbeat is this recent count as live (for the room in the queue); read this
# often.
LIVE_WORKER_MS = 15_000
LIVE_WORKERS_EVERY_S = 5.0

# If an enqueued flush never claims the group (it waits behind a running one), try again then.
RETRY_MS = 1_000

# A target's due checks, as many as may start (at most RECONCILE_PER_TARGET running at once).
TAKE_CHECKS = load(__file__, "take_checks.lua")

# A sweep over lb:groups starts at most this often (and at least once per interval).
SWEEP_S = 60.0
SWEEP_BATCH = 500


class OncePerCause:
    """Logs a step that keeps failing once per cause (an out-of-memory Redis refuses every
    tick's script: a traceback each tick would bury everything else in the log), and once
    when it works again."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failing: str | None = None  # the error every try has met since the last good one

    def failed(self, exc: BaseException) -> None:
        cause = f"{type(exc).__name__}: {exc}"
        if cause != self.failing:
            log.error("%s failed; trying again every tick", self.what, exc_info=exc)
        self.failing = cause

    def worked(self) -> bool:
        """Log the recovery, if it is one; whether it was."""
        if self.failing is None:
            return False
        log.info("%s works again", self.what)
        self.failing = None
        return True


class Polling(ABC):
    """A loop that ticks every ``every_s`` seconds and rides out Redis outages."""

    what = "scheduling"
    every_s: float

    @abstractmethod
    async def tick(self) -> int:
        """Enqueue what is due; how many jobs were enqueued."""

    async def run(self) -> None:
        redis_down = False
        errors = OncePerCause(self.what)
        while True:
            try:
                await self.tick()
            except Exception as exc:  # a Redis blip must not end the scheduler
                if not is_connection_failure(exc):
                    errors.failed(exc)
                elif not redis_down:  # once per outage, not a traceback every tick
                    log.info("%s paused: Redis unavailable (%s: %s)", self.what,
                             type(exc).__name__, str(exc))
                redis_down = is_connection_failure(exc)
            else:
                if redis_down:
                    log.info("%s resumed: Redis is back", self.what)
                else:
                    errors.worked()
                redis_down = False
            await asyncio.sleep(self.every_s)


@dataclass(frozen=True)
class Ticket:
    """A tick's turns: the score each tenant was moved to, and their token."""

    score: int
    token: str


@dataclass(frozen=True)
class NextDue:
    """When a tenant next has work (next_due.lua): -1 where there is none."""

    inbox: int  # events waiting
    groups: int  # first due group (lb:due)
    senders: int  # first due outbox (lb:senders)
    tombstones: int  # first tombstone expiry (lb:tombstones)
    checks: int  # first due check of a target not paused

    def at(self, now: int) -> int:
        """When the tenant's next turn is due; -1: not before something wakes it."""
        if self.inbox:
            return now
        purge = self.tombstones + k.TOMBSTONE_GRACE_MS if self.tombstones >= 0 else -1
        times = [t for t in (self.groups, self.senders, purge, self.checks) if t >= 0]
        return min(times) if times else -1


class Scheduler(Polling):
    """Turns the tenants' work into arq jobs, a turn per tenant with work (``lb:wake``): its
    inbox folded into state (``bridge/ingest/inbox.py``), its due groups (``lb:due``) into
    ``flush_group`` jobs, its due outboxes (``lb:senders``) into ``send_outbox`` jobs and its
    due checks into ``reconcile_group`` jobs (``ReconcileScheduler``). A change is scheduled in
    the turn that folds it.

    Only tenants with work take turns, so the cost of a tick grows with the work, not with the
    number of tenants configured. Fairness between tenants: the queue of jobs is kept short
    (about one worker's ``max_jobs`` waiting beyond what the live workers run), and the room
    in it is shared out among the tenants whose turn it is, the one served longest ago first;
    what a tenant cannot enqueue now stays due for its next turn. A tenant loading 20,000
    listings therefore never has more than its share of the queue ahead of another tenant's
    one change. A fold takes at most one batch per turn for the same reason."""

    what = "scheduling due work"

    def __init__(self, redis: ArqRedis, interval_ms: int, runtimes: Runtimes,
                 batch: int = 200, max_jobs: int = 10, state: Redis | None = None,
                 wake_all_every_s: float | None = None) -> None:
        """``redis``: arq's queue; ``state``: the bridge's state (a cluster's client; by
        default the same Redis as the queue). ``wake_all_every_s``: give every configured
        tenant a turn this often (a cluster's: there a webhook wakes its tenant in another
        slot than the event's, and a failover of that slot's master can lose the wake-up)."""
        self.wake_all_every_s = wake_all_every_s
        self._next_wake_all = time.monotonic() + (wake_all_every_s or 0)
        self.queue = redis
        self.redis: Redis = redis if state is None else state
        self.every_s = interval_ms / 1000
        self.runtimes = runtimes
        self.batch = batch
        self.max_jobs = max_jobs
        self._take_turns = Script(self.redis, TAKE_TURNS)
        self._end_turn = Script(self.redis, END_TURN)
        self._next_due = Script(self.redis, NEXT_DUE)
        self._take = Script(self.redis, TAKE_DUE)
        self._fold_errors = OncePerCause("folding the inbox")
        self._served: dict[str, float] = {}  # tenant -> when it last enqueued a job
        self._checks: dict[str, ReconcileScheduler] = {}
        self._workers = _LiveWorkers(self.redis)

    async def tick(self) -> int:
        if self.wake_all_every_s and time.monotonic() >= self._next_wake_all:
            self._next_wake_all = time.monotonic() + self.wake_all_every_s
            if self.runtimes.names:
                await self.redis.zadd(k.WAKE, dict.fromkeys(self.runtimes.names, 0))
        now = now_ms()
        token = secrets.token_hex(8)
        taken = [text(t) for t in await self._take_turns(
            keys=[k.WAKE, k.TURNS], args=[now, TURN_LEASE_MS, TURNS_PER_TICK, token])]
        if not taken:
            return 0
        ticket = Ticket(now + TURN_LEASE_MS, token)
        room = await self._room()
        taken.sort(key=lambda t: self._served.get(t, 0.0))
        shares = _shares(room, len(taken))
        turns = [self._turn(tenant, ticket, share) for tenant, share in zip(taken, shares,
                                                                            strict=True)]
        return sum(await asyncio.gather(*turns))

    async def _room(self) -> int:
        """Jobs that may join arq's queue now: what the live workers run, one worker's
        max_jobs beyond it, less what is queued or running already."""
        capacity = self.max_jobs * (await self._workers.count() + 1)
        return max(0, capacity - int(await self.queue.zcard(k.QUEUE)))

    async def _turn(self, tenant: str, ticket: Ticket, share: int) -> int:
        """One tenant's turn (in a task of its own: the tenant is set for it alone)."""
        tenancy.enter(tenant)
        runtime = self.runtimes.get(tenant)
        if runtime is None:  # not configured (any more): its data waits for a purge
            await self._end(tenant, ticket, -1)
            return 0
        targets = self._checked_targets(runtime)
        before = await self._look(targets)
        now = now_ms()
        folded = await self._fold(runtime) if before.at(now) >= 0 and (
            before.inbox or 0 <= before.tombstones + k.TOMBSTONE_GRACE_MS <= now) else 0
        enqueued = 0
        if share:
            enqueued += await self._enqueue(ks().SENDERS, k.SEND_JOB, tenant, share)
            enqueued += await self._enqueue(ks().DUE, k.FLUSH_JOB, tenant, share - enqueued)
        checks = self._checks_of(runtime)
        if checks is not None:
            enqueued += await checks.turn(folded > 0, before.checks, now)
        if enqueued:
            self._served[tenant] = time.monotonic()
        after = await self._look(targets)
        await self._end(tenant, ticket, _next(after, checks))
        return enqueued

    async def _end(self, tenant: str, ticket: Ticket, next_due: int) -> None:
        await self._end_turn(keys=[k.WAKE, k.TURNS],
                             args=[tenant, ticket.score, next_due, ticket.token])

    def _checked_targets(self, runtime: Runtime) -> list[str]:
        if not runtime.settings.reconcile.interval_s:
            return []
        return [t.name for t in runtime.settings.targets]

    async def _look(self, targets: list[str]) -> NextDue:
        keys = ks()
        per_target = [key for t in targets
                      for key in (f"{keys.RECONCILE_DUE}{t}", f"{keys.TARGET}{t}")]
        found = await self._next_due(
            keys=[keys.INBOX, keys.DUE, keys.SENDERS, keys.TOMBSTONES, *per_target],
            args=targets)
        return NextDue(*(int(n) for n in found))

    async def _enqueue(self, due: str, job_name: str, tenant: str, most: int) -> int:
        if most <= 0:
            return 0
        enqueued = 0
        for name in await self._take_due(due, min(most, self.batch)):
            job = await self.queue.enqueue_job(job_name, name, tenant=tenant,
                                               _queue_name=k.QUEUE)
            enqueued += job is not None
        return enqueued

    async def _take_due(self, due: str, most: int) -> list[str]:
        """The members of ``due`` (lb:due or lb:senders) due now, each moved RETRY_MS on."""
        taken = await self._take(keys=[due], args=[now_ms(), RETRY_MS, most])
        return [text(raw) for raw in taken]

    async def _fold(self, runtime: Runtime) -> int:
        """Fold a batch of the tenant's inbox. An entry the fold cannot handle goes aside in
        the same call (``lb:inbox:dead``, logged by the inbox) and the rest is folded; a fold
        that fails whole (the script itself) never holds back the flushes and sends of what is
        folded already: logged once per cause, and the turn goes on. Redis being away is the
        tick's to ride out."""
        try:
            folded = await runtime.inbox.fold()
        except Exception as exc:
            if is_connection_failure(exc):
                raise
            self._fold_errors.failed(exc)
            return 0
        self._fold_errors.worked()
        if folded.applied:
            await self._wake_senders(runtime)
        return folded.events

    async def _wake_senders(self, runtime: Runtime) -> None:
        """Listings changed: an idle sender of a target that takes writes ahead of their
        groups' flushes (``bridge/delivery/ahead.py``) is due now. NX: a sender that is
        running or waiting for a budget keeps its time (a running one takes them itself)."""
        ahead = {t.name: now_ms() for t in runtime.settings.targets
                 if t.mode == "per_listing" and t.ahead and t.bulk_per_minute > 0}
        if ahead:
            await self.redis.zadd(ks().SENDERS, ahead, nx=True)

    def _checks_of(self, runtime: Runtime) -> ReconcileScheduler | None:
        """The tenant's check scheduler (its sweep's place kept between turns)."""
        if not runtime.settings.reconcile.interval_s:
            return None
        checks = self._checks.get(runtime.tenant)
        if checks is None or checks.settings is not runtime.settings:
            checks = self._checks[runtime.tenant] = ReconcileScheduler(
                self.queue, runtime.settings, self.redis)
        return checks


def _next(after: NextDue, checks: ReconcileScheduler | None) -> int:
    """When the tenant's next turn is due: its work, or the sweep it owes."""
    now = now_ms()
    at = after.at(now)
    owed = checks.owed_at() if checks is not None else -1
    if owed >= 0 and (at < 0 or owed < at):
        return owed
    return at


def _shares(room: int, tenants: int) -> list[int]:
    """``room`` jobs shared out over ``tenants`` in order: equal shares, the remainder to the
    first ones (served longest ago)."""
    each, extra = divmod(room, tenants)
    return [each + (i < extra) for i in range(tenants)]


class _LiveWorkers:
    """How many workers beat recently (lb:workers), read at most every few seconds."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._count = 1
        self._read_at = -math.inf

    async def count(self) -> int:
        if time.monotonic() - self._read_at > LIVE_WORKERS_EVERY_S:
            beats = await self.redis.hvals(k.WORKERS)  # type: ignore[misc]
            fresh = now_ms() - LIVE_WORKER_MS
            self._count = max(1, sum(1 for b in beats if orjson.loads(b).get("at", 0) > fresh))
            self._read_at = time.monotonic()
        return self._count


class ReconcileScheduler:
    """One tenant's periodic checks: keeps every group scheduled for a check on every target
    (``lb:reconcile:due:{target}``, see ``bridge/reconcile/schedule.py``) and turns the due
    checks into ``reconcile_group`` jobs, in the tenant's turns. Groups that appear (a turn
    folded events) are scheduled by a sweep over ``lb:groups``: one SSCAN step of
    ``sweep_batch`` groups a turn, a new sweep at most every ``SWEEP_S``; a sweep owed meanwhile
    gives the tenant a turn when it may start (``owed_at``)."""

    def __init__(self, redis: ArqRedis, settings: Settings, state: Redis | None = None,
                 sweep_batch: int = SWEEP_BATCH) -> None:
        assert settings.reconcile.interval_s > 0
        self.queue = redis  # arq's: where the checks go as jobs
        self.redis: Redis = redis if state is None else state
        self.settings = settings
        self.tenant = settings.tenant
        self.targets = list(settings.targets)
        self.interval_ms = settings.reconcile.interval_s * 1000
        self.sweep_batch = sweep_batch
        self.sweep_every_ms = int(min(SWEEP_S, settings.reconcile.interval_s) * 1000)
        self._cursor: str | None = None  # None: between sweeps
        self._next_sweep = 0  # ms: no sweep starts before
        self._owed = True  # a sweep is owed: the first turn in this worker starts one
        self._top_up = schedule.TopUp(self.redis)
        self._take = Script(self.redis, TAKE_CHECKS)

    async def turn(self, folded: bool, first_check: int, now: int) -> int:
        """The tenant's turn: a step of its sweep, when one is under way or owed and may
        start, then its due checks as jobs; how many were enqueued."""
        self._owed = self._owed or folded
        if self.targets and (self.sweeping or self._owed):
            await self.top_up()
        if not (0 <= first_check <= now):
            return 0
        return await self.take_due()

    async def take_due(self) -> int:
        enqueued = 0
        for spec in self.targets:
            # A paused target is neither read nor repaired: its checks wait, due, for a resume.
            if not await self.redis.hget(f"{ks().TARGET}{spec.name}", "paused"):  # type: ignore[misc]
                enqueued += await self.take(spec.name)
        return enqueued

    def owed_at(self) -> int:
        """When this tenant needs a turn for its sweep (ms); -1: it does not."""
        if self.sweeping:
            return now_ms()
        return self._next_sweep if self._owed and self.targets else -1

    async def top_up(self) -> int:
        """One step of the sweep under way, or the start of the next one when it is time;
        how many (target, group) checks were scheduled."""
        added = 0
        if self._cursor is None:
            if now_ms() < self._next_sweep:
                return 0
            self._cursor, self._owed = "0", False
            added += await self._whole_portals()
        cursor, more = await self._top_up.step([t.name for t in self.targets], self._cursor,
                                               self.sweep_batch, self.interval_ms, now_ms())
        if cursor == "0":
            self._cursor = None
            self._next_sweep = now_ms() + self.sweep_every_ms
        else:
            self._cursor = cursor
        return added + more

    async def sweep(self) -> int:
        """A whole sweep over lb:groups at once (the ticks take it a step at a time)."""
        self._cursor, self._next_sweep = None, 0
        added = await self.top_up()
        while self.sweeping:
            added += await self.top_up()
        return added

    @property
    def sweeping(self) -> bool:
        return self._cursor is not None

    async def _whole_portals(self) -> int:
        """The whole-portal check of each per-listing target, if not scheduled yet."""
        added = 0
        now = now_ms()
        for spec in self.targets:
            if schedule.whole_portal(spec):
                due = schedule.first_due_ms(spec.name, schedule.WHOLE_PORTAL, self.interval_ms,
                                            now)
                added += await self.redis.zadd(f"{ks().RECONCILE_DUE}{spec.name}",
                                               {schedule.WHOLE_PORTAL: due}, nx=True)
        return added

    async def take(self, target: str) -> int:
        enqueued = 0
        for group, ticket in await self._take_checks(target):
            job = await self.queue.enqueue_job(k.RECONCILE_JOB, target, group, ticket,
                                               tenant=self.tenant, _queue_name=k.QUEUE)
            enqueued += job is not None
        return enqueued

    async def _take_checks(self, target: str) -> list[tuple[str, int]]:
        """The target's checks that may start now, each with its ticket (the score it was
        moved to)."""
        taken = await self._take(
            keys=[f"{ks().RECONCILE_DUE}{target}", f"{ks().RECONCILE_RUNNING}{target}"],
            args=[now_ms(), k.RECONCILE_RETAKE_MS, k.RECONCILE_LOCK_MS,
                  k.RECONCILE_PER_TARGET])
        return [(text(group), int(float(ticket)))
                for group, ticket in zip(taken[::2], taken[1::2], strict=True)]
