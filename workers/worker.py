"""The arq worker process: its settings, start-up and shut-down, the scheduler and a heartbeat.

``run_worker`` supervises arq: when Redis goes away (a restart, a failover, a network blip) arq's
worker stops with a connection error; the supervisor logs the outage once, releases that worker,
waits with capped exponential backoff until Redis answers again and starts a fresh worker. A
flush that was running is due again by itself (the delivery lease). A worker started while
Redis is down waits the same way. A Redis that keeps its connections open but stops answering
(a frozen process, a network path that dropped them) fails no call: redis-py would wait on the
socket for good, silently. So the supervisor pings it on a connection of its own every
``WATCH_EVERY_S`` while the worker runs, and a ping unanswered for ``STALL_S`` is an outage like
a refused connection: said once, the worker released (without its last Redis calls; every
other call on the way out is bounded), a fresh one started once Redis answers. A deadline from
outside rather than redis-py's ``socket_timeout``: that one left a pending write task behind at
each outage (seen with redis-py 5.3). A Redis past its maxmemory (OutOfMemoryError, from the
bridge's calls or arq's own: job enqueue, health check) is an outage too, said once: until a ping
answers and, after folding the inbox itself, the supervisor finds Redis below its maxmemory,
no fresh worker starts. Anything that is not a connection failure (an unsafe Redis, a bug)
still stops the process. SIGTERM and SIGINT stop the current worker as arq would
and end the process normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable
from typing import Any

import orjson
from arq import func
from arq.connections import ArqRedis
from arq.worker import Worker
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError

from bridge import constants as k
from bridge import tenancy
from bridge.clock import now_ms
from bridge.connections import check_state, fullest, redis_client, state_client
from bridge.ingest.inbox import Inbox
from bridge.migration import migrate
from bridge.settings import Settings, reread
from workers.jobs import (
    CONNECTION_ERRORS,
    flush_group,
    is_connection_failure,
    reconcile_group,
    send_outbox,
)
from workers.scheduler import CLUSTER_WAKE_ALL_S, Scheduler
from workers.tenants import Runtimes

log = logging.getLogger("workers.worker")

HEARTBEAT_S = 5

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 5.0
# A worker that ran this long before failing had a working Redis: start the backoff afresh.
STABLE_S = 30.0
# arq's own default for connecting.
CONNECT_TIMEOUT_S = 1.0
# How long a retiring worker's jobs get to record that they stopped, when Redis answers.
RETIRE_S = 5.0
# And each of its own last Redis calls (a live Redis answers them in milliseconds).
LAST_CALL_S = 2.0
# A ping of the supervisor's unanswered this long: Redis is treated as gone. The same as the
# read timeout of the bridge's other clients (bridge.connections.redis_client); far longer than
# any command the bridge sends takes.
STALL_S = 5.0
# How often the supervisor pings while a worker runs (one PING: nothing to Redis), and the
# slices it waits for the answer in.
WATCH_EVERY_S = 2.0
PING_SLICE_S = 0.25


# arq counts each interrupted run of a job as a try; a flush or a send is safe to run again
# (lease and fence), so arq never gives one up (workers/__init__.py).
EVERY_TRY = 1_000_000

# A check reads at its share of the target's rate (a large group on a slow portal takes
# minutes); it holds its group's check lock, renewed, all the while.
RECONCILE_TIMEOUT_S = 3_600


class RedisStalled(RedisConnectionError):
    """Redis kept its connections open but did not answer a ping in time."""


async def heartbeat(ctx: dict[str, Any]) -> None:
    redis = ctx["state"]
    while True:
        beat = {"at": now_ms(), "pid": os.getpid(), "host": socket.gethostname()}
        try:
            await redis.hset(k.WORKERS, ctx["worker_id"], orjson.dumps(beat))
        except Exception as exc:  # a Redis blip must not end the heartbeat
            if not is_connection_failure(exc):  # the supervisor reports outages
                log.exception("recording the heartbeat failed; trying again")
        await asyncio.sleep(HEARTBEAT_S)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    assert settings.redis_url
    # The bridge's state: arq's own Redis, or on a cluster a client of its own (arq's queue
    # then lives on [redis] jobs_url).
    apart = settings.redis.cluster or bool(settings.redis.jobs_url)
    state = ctx["state"] = state_client(settings.redis_url, settings.redis.cluster) if apart \
        else ctx["redis"]
    await check_state(state, settings)  # UnsafeRedis stops the process
    if not settings.redis.cluster:  # no single-tenant release ever ran on a cluster
        report = await migrate(state)  # a single-tenant release's keys, moved once
        if report is not None:
            log.info("%s", report.describe())
    tenancy.register_credentials(settings.credentials())
    runtimes = ctx["runtimes"] = Runtimes(state, settings)
    ctx["worker_id"] = f"{socket.gethostname()}:{os.getpid()}"
    await wake_all(state, runtimes.names)
    scheduler = Scheduler(ctx["redis"], settings.delivery.poll_interval_ms, runtimes,
                          max_jobs=settings.delivery.max_jobs, state=state,
                          wake_all_every_s=CLUSTER_WAKE_ALL_S if settings.redis.cluster else None)
    ctx["tasks"] = [asyncio.create_task(scheduler.run()), asyncio.create_task(heartbeat(ctx))]


async def wake_all(redis: Redis, tenants: frozenset[str] | list[str]) -> None:
    """A turn now for every tenant named (a worker's start, a reload): whatever work they have
    is found, whatever woke them before a crash or not at all (data migrated, a tenant added),
    and each one's sweep of its groups starts."""
    if tenants:
        await redis.zadd(k.WAKE, dict.fromkeys(tenants, 0))


async def shutdown(ctx: dict[str, Any]) -> None:
    """Release what ``startup`` made; also runs when Redis is away, so Redis is best effort."""
    await release(ctx, redis_answers=True)


async def release(ctx: dict[str, Any], redis_answers: bool) -> None:
    """``shutdown``, leaving Redis alone when it is known not to answer."""
    for task in ctx.pop("tasks", []):
        await stop_task(task)
    if "worker_id" in ctx and redis_answers:  # a stale beat is overwritten on return
        await bounded(ctx["state"].hdel(k.WORKERS, ctx["worker_id"]))
    runtimes: Runtimes | None = ctx.pop("runtimes", None)
    if runtimes is not None:
        await runtimes.aclose()
    state = ctx.pop("state", None)
    if state is not None and state is not ctx.get("redis"):  # a cluster's client of its own
        with contextlib.suppress(*CONNECTION_ERRORS):
            await asyncio.wait_for(state.aclose(), LAST_CALL_S)


async def stop_task(task: asyncio.Task[Any], tries: int = 10) -> None:
    """Cancel ``task`` and wait for it, cancelling again while it lives: a cancellation that
    arrives as an ``asyncio.wait_for`` inside it completes is swallowed (Python 3.11; redis-py
    waits that way), and a single cancel then left SIGTERM waiting for good."""
    for _ in range(tries):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if done:
            break
    if task.done() and not task.cancelled():
        task.exception()  # seen: the outage's or the shutdown's, reported where it happened


async def bounded(call: Awaitable[object]) -> None:
    """A Redis call on the way out: given up on a connection failure, or after
    ``LAST_CALL_S`` when Redis does not answer at all."""
    with contextlib.suppress(*CONNECTION_ERRORS):  # TimeoutError is an OSError
        await asyncio.wait_for(call, LAST_CALL_S)


def arq_pool(url: str) -> ArqRedis:
    """arq's Redis client for ``redis_url``, read by redis-py's own URL rules like every other
    client of the bridge (arq's ``RedisSettings.from_dsn`` drops unix://...?db=N and the ssl_*
    options). Made without connecting: arq's create_pool and its retries are not used, the
    supervisor waits for Redis itself, and says so."""
    pool: ArqRedis = ArqRedis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S)
    pool.default_queue_name = k.QUEUE
    return pool


def create_worker(settings: Settings, *, handle_signals: bool = True) -> Worker:
    assert settings.redis_url
    delivery = settings.delivery
    return Worker(
        functions=[func(flush_group, name=k.FLUSH_JOB, max_tries=EVERY_TRY),
                   func(send_outbox, name=k.SEND_JOB, max_tries=EVERY_TRY),
                   func(reconcile_group, name=k.RECONCILE_JOB, max_tries=3,
                        timeout=RECONCILE_TIMEOUT_S)],
        redis_pool=arq_pool(settings.redis.jobs_url or settings.redis_url),
        queue_name=k.QUEUE,
        max_jobs=delivery.max_jobs,
        job_timeout=delivery.job_timeout_s,
        keep_result=0,
        poll_delay=0.05,
        on_startup=startup,
        on_shutdown=shutdown,
        ctx={"settings": settings},
        handle_signals=handle_signals,
        health_check_interval=HEARTBEAT_S,
    )


async def retire(worker: Worker, redis_answers: bool = True) -> None:
    """Stop an arq worker and release everything it holds (its job tasks, what ``startup``
    made, its connection pool), whether or not Redis answers (``redis_answers``: False after a
    stall, when its last Redis calls would only wait out their bound). arq's own ``close``
    gives up at its first Redis command, leaving the scheduler, the heartbeat and the pool
    behind."""
    running = [t for t in worker.tasks.values() if not t.done()]
    for task in running:
        if not task.cancelling():  # a signal may have cancelled it already
            task.cancel()  # arq re-queues a cancelled job (when Redis lets it)
    if worker.main_task is not None:
        worker.main_task.cancel()
        await asyncio.wait([worker.main_task])
    if running:
        _, stuck = await asyncio.wait(running, timeout=RETIRE_S)
        for task in stuck:
            task.cancel()
        if stuck:
            await asyncio.wait(stuck, timeout=1)
    for task in worker.tasks.values():
        if task.done() and not task.cancelled():
            task.exception()  # seen: these are the outage's errors, already reported
    worker.tasks.clear()
    pool = worker._pool  # None when Redis was away before the pool was made
    if pool is None:
        return
    try:
        if redis_answers:
            await bounded(pool.delete(worker.health_check_key))
        await release(worker.ctx, redis_answers)
    finally:
        await pool.aclose(close_connection_pool=True)
        worker._pool = None


class Supervisor:
    """Runs one arq worker at a time and starts a fresh one after a Redis outage."""

    def __init__(self, settings: Settings, stall_s: float = STALL_S,
                 watch_every_s: float = WATCH_EVERY_S, config_path: str | None = None) -> None:
        assert settings.redis_url
        self.settings = settings
        self.config_path = config_path  # what a SIGHUP reloads
        self.stall_s = stall_s
        self.watch_every_s = watch_every_s
        self.url = settings.redis_url
        self._jobs: Redis | None = None  # arq's queue apart from the state (a cluster's)
        self.stopping = asyncio.Event()
        self.worker: Worker | None = None
        self.redis_down = False
        self.out_of_memory = False  # the outage is a full Redis (it answers, refusing writes)
        self.delay = BACKOFF_FIRST_S

    def reload(self) -> bool:
        """SIGHUP: read the configuration file again and serve its tenants from the next job
        and turn on (jobs running finish with what they started with). An invalid file is
        logged with its name and line and changes nothing. Settings outside the tenants
        (Redis, [delivery]) take a restart."""
        settings = reread(self.config_path, log)
        if settings is None:
            return False
        self.settings = settings
        worker = self.worker
        if worker is not None and "runtimes" in worker.ctx:
            worker.ctx["settings"] = settings
            worker.ctx["runtimes"].reload(settings)
            asyncio.get_running_loop().create_task(self._wake(worker, settings))
        return True

    async def _wake(self, worker: Worker, settings: Settings) -> None:
        """Every tenant of a reloaded configuration gets a turn (a new one's work is found)."""
        with contextlib.suppress(*CONNECTION_ERRORS):  # the next start wakes them all anyway
            await wake_all(worker.ctx["state"], settings.tenant_names())

    def stop(self, signum: signal.Signals) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self.worker is not None:
            self.worker.handle_sig(signum)  # logs, cancels its jobs and its main task

    async def run(self) -> None:
        # No read timeout of its own: ``_ping`` keeps the deadline, in responsive time.
        probe = state_client(self.url, self.settings.redis.cluster, socket_timeout=None)
        # arq's queue on a Redis of its own (jobs_url; a cluster's): a worker needs both.
        jobs_url = self.settings.redis.jobs_url
        self._jobs = redis_client(jobs_url, socket_timeout=None) if jobs_url else None
        try:
            while not self.stopping.is_set():
                if await self._redis_answers(probe) and not self.stopping.is_set():
                    started = time.monotonic()
                    failure = await self._run_worker(probe)
                    if failure is None:
                        return  # stopped by a signal
                    self._went_away(failure)
                    if time.monotonic() - started > STABLE_S:
                        self.delay = BACKOFF_FIRST_S
                await self._pause()
        finally:
            await probe.aclose()
            if self._jobs is not None:
                await self._jobs.aclose()

    async def _run_worker(self, probe: Redis) -> BaseException | None:
        """Run a fresh arq worker until a signal stops it (None) or Redis goes away or stops
        answering (the error); any other failure propagates, after the worker is released."""
        worker = self.worker = create_worker(self.settings, handle_signals=False)
        worker.main_task = asyncio.create_task(worker.main())
        watch = asyncio.create_task(self._watch(probe))
        try:
            await asyncio.wait([worker.main_task, watch], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not watch.done():
                watch.cancel()
            await asyncio.wait([watch])
        failure: BaseException | None
        if worker.main_task.done():
            failure = None if worker.main_task.cancelled() else worker.main_task.exception()
        else:  # the stall (or a bug in the watch); retire() cancels the worker
            failure = watch.exception() or watch.result()
        try:
            await retire(worker, redis_answers=not isinstance(failure, RedisStalled))
        finally:
            self.worker = None
        if failure is None or self.stopping.is_set():
            return None
        if not is_connection_failure(failure):
            raise failure
        return failure

    async def _watch(self, probe: Redis) -> BaseException:
        """Ping Redis every ``watch_every_s`` while the worker runs; return once a ping goes
        unanswered for ``stall_s``. A refused ping is left to the worker: its own calls fail
        too, and it stops by itself."""
        while True:
            await asyncio.sleep(self.watch_every_s)
            try:
                await self._ping(probe)
            except RedisStalled as exc:
                return exc
            except Exception as exc:
                if not is_connection_failure(exc):
                    raise

    async def _ping(self, probe: Redis) -> None:
        """PING, or ``RedisStalled`` once it has gone unanswered for ``stall_s`` of this
        process's own responsive time. The wait goes in slices: one that overran by far was
        this event loop blocked (a long synchronous step of a flush), not Redis, and does not
        count, so a worker busy with a large group is never taken for a stalled Redis (and
        restarted mid-flush, again and again)."""
        ping = asyncio.ensure_future(self._ping_all(probe))
        waited = 0.0
        try:
            while waited < self.stall_s:
                started = time.monotonic()
                done, _ = await asyncio.wait({ping}, timeout=PING_SLICE_S)
                if done:
                    await ping  # its answer, or the connection failure
                    return
                if time.monotonic() - started < 2 * PING_SLICE_S:
                    waited += PING_SLICE_S
        finally:
            if not ping.done():
                ping.cancel()  # redis-py closes that connection: the next ping opens a new one
                await asyncio.wait({ping})
            elif not ping.cancelled():
                ping.exception()  # seen, whatever it was: the stall is what is reported
        raise RedisStalled(f"no answer to PING within {self.stall_s:g} s: the server is frozen "
                           "or overloaded, or the network path to it dropped the connection")

    async def _ping_all(self, probe: Redis) -> None:
        await probe.ping()
        if self._jobs is not None:
            await self._jobs.ping()

    async def _redis_answers(self, probe: Redis) -> bool:
        try:
            await self._ping(probe)
            if self.out_of_memory:
                await self._make_room(probe)
        except Exception as exc:
            if not is_connection_failure(exc):
                raise
            self._went_away(exc)
            return False
        if self.redis_down:
            log.info("Redis at %s is back; worker resuming", self.url)
            self.redis_down = False
        return True

    async def _make_room(self, probe: Redis) -> None:
        """After an OutOfMemoryError: fold the inbox (its script runs past maxmemory, and
        what it folds leaves the inbox), then OutOfMemoryError again if Redis is still full. A
        worker started now would only meet the error again at its first write."""
        for tenant in self.settings.tenant_names():
            with tenancy.use(tenant):
                await Inbox(probe, self.settings.for_tenant(tenant)).drain()
        used, ceiling = fullest(await probe.info("memory"))
        if ceiling and used >= ceiling:
            raise OutOfMemoryError("Redis is still past its maxmemory after folding the inbox: "
                                   "raise maxmemory or free memory")

    def _went_away(self, exc: BaseException) -> None:
        self.out_of_memory = isinstance(exc, OutOfMemoryError)
        if not self.redis_down:  # str(exc): a kept log record must not pin the old worker
            log.warning("Redis at %s is unavailable (%s: %s); delivery paused until it "
                        "answers (checking with backoff, at least every %.0f s)",
                        self.url, type(exc).__name__, str(exc), BACKOFF_MAX_S)
            self.redis_down = True

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):  # a signal ends the pause early
            await asyncio.wait_for(self.stopping.wait(), self.delay)
        self.delay = min(self.delay * 2, BACKOFF_MAX_S)


async def supervise(settings: Settings, config_path: str | None = None) -> None:
    supervisor = Supervisor(settings, config_path=config_path)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, supervisor.stop, signum)
    loop.add_signal_handler(signal.SIGHUP, supervisor.reload)
    try:
        await supervisor.run()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)


def run_worker(settings: Settings, config_path: str | None = None) -> None:
    """The worker process; with ``config_path`` a SIGHUP reloads its tenants. Every piece of
    its work names its tenant (a job, a turn): code that does not fails instead of working on
    the default tenant's data."""
    tenancy.require_explicit()
    asyncio.run(supervise(settings, config_path))
