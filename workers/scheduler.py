"""Turns due work into arq jobs: the webhook's inbox into state, due groups into flushes and due
outboxes into sends (``Scheduler``), and due reconciliation
checks into ``reconcile_group`` jobs (``ReconcileScheduler``). Every worker runs both; any
number may run at once.

Taking a due group bumps its score a little, atomically, so the other workers' schedulers do not
enqueue it again meanwhile. Job ids are arq's own: what keeps a group to one flush at a time is
the flush's lease (``bridge/delivery/claims.py``), not the job id, so a job left behind by a
killed worker never blocks the next flush of its group. A check is kept to one at a time the
same way, by its lock (``bridge/reconcile/records.py``) and the ticket it is taken with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod

from arq.connections import ArqRedis

from bridge import constants as k
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.ingest.inbox import Inbox
from bridge.reconcile import schedule
from bridge.replies import text
from bridge.scripts import Script, load
from bridge.settings import Settings
from workers.jobs import is_connection_failure

log = logging.getLogger("workers.scheduler")

TAKE_DUE = load(__file__, "take_due.lua")  # due groups, or due outboxes

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


class Scheduler(Polling):
    """Folds the webhook's inbox (``lb:inbox``) into the desired state, then turns due groups
    (``lb:due``) into ``flush_group`` jobs and due outboxes (``lb:senders``) into
    ``send_outbox`` jobs: a change is scheduled in the tick that folds it."""

    what = "scheduling due groups"

    def __init__(self, redis: ArqRedis, interval_ms: int, inbox: Inbox,
                 batch: int = 200) -> None:
        self.redis = redis
        self.every_s = interval_ms / 1000
        self.inbox = inbox
        self.batch = batch
        self._take = Script(redis, TAKE_DUE)
        self._fold_errors = OncePerCause("folding the inbox")

    async def tick(self) -> int:
        await self._fold()
        enqueued = 0
        for due, job_name in ((ks().DUE, k.FLUSH_JOB), (ks().SENDERS, k.SEND_JOB)):
            for name in await self._take_due(due):
                job = await self.redis.enqueue_job(job_name, name, _queue_name=k.QUEUE)
                enqueued += job is not None
        return enqueued

    async def _take_due(self, due: str) -> list[str]:
        """The members of ``due`` (lb:due or lb:senders) due now, each moved RETRY_MS on."""
        taken = await self._take(keys=[due], args=[now_ms(), RETRY_MS, self.batch])
        return [text(raw) for raw in taken]

    async def _fold(self) -> None:
        """Fold the inbox. An entry the fold cannot handle goes aside in the same call
        (``lb:inbox:dead``, logged by the inbox) and the rest is folded; a fold that fails
        whole (the script itself) never holds back the flushes and sends of what is folded
        already: logged once per cause, and the tick goes on. Redis being away is the tick's to
        ride out."""
        try:
            await self.inbox.drain()
        except Exception as exc:
            if is_connection_failure(exc):
                raise
            self._fold_errors.failed(exc)
        else:
            self._fold_errors.worked()


class ReconcileScheduler(Polling):
    """Keeps every group scheduled for a check on every target (``lb:reconcile:due:{target}``,
    see ``bridge/reconcile/schedule.py``) and turns the due checks into ``reconcile_group``
    jobs. Groups that appear are scheduled by the next sweep over ``lb:groups``: one SSCAN step
    of ``sweep_batch`` groups a tick, a new sweep at most every ``SWEEP_S``."""

    what = "scheduling reconciliation"

    def __init__(self, redis: ArqRedis, settings: Settings, every_s: float = 1.0,
                 sweep_batch: int = SWEEP_BATCH) -> None:
        assert settings.reconcile.interval_s > 0
        self.redis = redis
        self.targets = list(settings.targets)
        self.interval_ms = settings.reconcile.interval_s * 1000
        self.every_s = every_s
        self.sweep_batch = sweep_batch
        self.sweep_every_s = min(SWEEP_S, settings.reconcile.interval_s)
        self._cursor: str | None = None  # None: between sweeps
        self._next_sweep = 0.0
        self._top_up = schedule.TopUp(redis)
        self._take = Script(redis, TAKE_CHECKS)

    async def tick(self) -> int:
        if self.targets:
            await self.top_up()
        enqueued = 0
        for spec in self.targets:
            # A paused target is neither read nor repaired: its checks wait, due, for a resume.
            if not await self.redis.hget(f"{ks().TARGET}{spec.name}", "paused"):  # type: ignore[misc]
                enqueued += await self.take(spec.name)
        return enqueued

    async def top_up(self) -> int:
        """One step of the sweep under way, or the start of the next one when it is time;
        how many (target, group) checks were scheduled."""
        added = 0
        if self._cursor is None:
            if time.monotonic() < self._next_sweep:
                return 0
            self._cursor = "0"
            added += await self._whole_portals()
        cursor, more = await self._top_up.step([t.name for t in self.targets], self._cursor,
                                               self.sweep_batch, self.interval_ms, now_ms())
        if cursor == "0":
            self._cursor = None
            self._next_sweep = time.monotonic() + self.sweep_every_s
        else:
            self._cursor = cursor
        return added + more

    async def sweep(self) -> int:
        """A whole sweep over lb:groups at once (the ticks take it a step at a time)."""
        self._cursor, self._next_sweep = None, 0.0
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
            job = await self.redis.enqueue_job(k.RECONCILE_JOB, target, group, ticket,
                                               _queue_name=k.QUEUE)
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
