"""The arq jobs a worker runs: one flush of one group (``bridge.delivery.flush``), one drain of
a per-listing target's outbox by bulk (``bridge.delivery.sender``), and one periodic check of
one group on one target (``bridge.reconcile``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from arq.worker import Retry
from redis.asyncio import Redis
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    OutOfMemoryError,
    RedisClusterException,
    TryAgainError,
    WatchError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge import group_state, tenancy
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.portals import PortalError
from bridge.reconcile import schedule
from bridge.reconcile.compare import Finding, GroupCheck, Kind
from bridge.reconcile.records import counts
from bridge.reconcile.service import Reconciler
from bridge.settings import RentixTarget, TravtusTarget
from workers.tenants import Runtime, Runtimes

log = logging.getLogger("workers.jobs")

# What "Redis is not there" looks like; waiting helps only with these. (TimeoutError and
# ConnectionRefusedError are OSErrors; BusyLoadingError, a Redis replaying its AOF, is a
# ConnectionError.) Credentials that Redis refuses do not heal by waiting. A Redis past its
# maxmemory refuses writes (OutOfMemoryError) until the fold frees the inbox or an operator
# makes room: an outage to ride out like a restart, never a reason for a worker to exit.
# On a cluster: no node answers (RedisClusterException, not a RedisError), a master is failing
# over (CLUSTERDOWN, MASTERDOWN) or a slot is moving (TRYAGAIN): outages too.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError,
                                                      OSError, OutOfMemoryError,
                                                      RedisClusterException, ClusterDownError,
                                                      TryAgainError)
NOT_TRANSIENT: tuple[type[BaseException], ...] = (AuthenticationError, AuthorizationError)

# An interrupted flush runs again this soon, if Redis is back by then.
INTERRUPTED_RETRY_S = 1.0

# What the periodic pass repairs by itself; stale and unknown listings are only reported.
REPAIR: tuple[Kind, ...] = ("missing", "drift")
# How long a check waits for its group's pending changes to go out first (a listing the bridge
# has not sent yet is not drift), and how often it looks.
QUIET_WAIT_S = 30.0
QUIET_POLL_S = 0.2


def is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, WatchError):  # redis-py's word for a connection lost during a WATCH
        return exc.__context__ is not None and is_connection_failure(exc.__context__)
    return isinstance(exc, CONNECTION_ERRORS) and not isinstance(exc, NOT_TRANSIENT)


@contextlib.asynccontextmanager
async def tenant_job(ctx: dict[str, Any], tenant: str) -> AsyncIterator[Runtime | None]:
    """A job's tenant: set for the rest of the job's task, its runtime (None: not configured
    any more) held while the job runs. When the job ends the tenant gets a turn of the
    schedulers: whatever the job made due (a group's next flush, an outbox) is found then,
    not when a lease would have lapsed."""
    tenancy.enter(tenant)
    runtimes: Runtimes = ctx["runtimes"]
    runtime = runtimes.get(tenant)
    if runtime is not None:
        runtime.jobs += 1
    try:
        yield runtime
    finally:
        if runtime is not None:
            runtime.jobs -= 1
        with contextlib.suppress(*CONNECTION_ERRORS):  # the next turn's look finds it anyway
            await group_state.wake(ctx["state"])


async def flush_group(ctx: dict[str, Any], group: str, tenant: str = tenancy.DEFAULT) -> str:
    async with tenant_job(ctx, tenant) as runtime:
        if runtime is None:
            return f"{group}: tenant {tenant} is not configured"
        try:
            return str(await runtime.delivery.flush(group))  # arq logs and keeps the text
        except Exception as exc:
            if not is_connection_failure(exc):
                raise
            # Lost Redis mid-flush: arq keeps the job and runs it again (one log line, no
            # traceback); if Redis is still away, the worker's supervisor takes over.
            raise Retry(defer=INTERRUPTED_RETRY_S) from exc


async def send_outbox(ctx: dict[str, Any], target: str, tenant: str = tenancy.DEFAULT) -> str:
    """Drain one per-listing target's outbox by bulk (``bridge.delivery.sender``)."""
    async with tenant_job(ctx, tenant) as runtime:
        if runtime is None:
            return f"{target}: tenant {tenant} is not configured"
        return await _send(ctx, runtime, target)


async def _send(ctx: dict[str, Any], runtime: Runtime, target: str) -> str:
    delivery, settings = runtime.delivery, runtime.settings
    try:
        spec = settings.target(target)
    except KeyError:
        spec = None
    if spec is None or spec.mode != "per_listing":
        # Left behind by a target no longer configured (or not per-listing): stop asking.
        await ctx["state"].zrem(ks().SENDERS, target)
        return f"{target}: not a configured per-listing target; its outbox is left as it is"
    try:
        return await delivery.sender.drain(spec)
    except Exception as exc:
        if not is_connection_failure(exc):
            raise
        raise Retry(defer=INTERRUPTED_RETRY_S) from exc


class PausedTarget(Exception):
    """An operator paused the target: it is neither read nor repaired until resumed."""


async def reconcile_group(ctx: dict[str, Any], target: str, group: str, ticket: int,
                          tenant: str = tenancy.DEFAULT) -> str:
    """Check ``group`` on ``target`` against the desired state and repair missing and drifted
    listings (under the group's lease); record what was found and when the group is next due.
    ``ticket`` is the due score the scheduler took it with: a job whose group was taken again,
    or checked, since then does nothing."""
    async with tenant_job(ctx, tenant) as runtime:
        if runtime is None:
            return f"{group or '(whole portal)'} on {target}: tenant {tenant} is not configured"
        return await _reconcile(ctx, runtime, target, group, ticket)


async def _reconcile(ctx: dict[str, Any], runtime: Runtime, target: str, group: str,
                     ticket: int) -> str:
    settings = runtime.settings
    interval_ms = settings.reconcile.interval_s * 1000
    if not interval_ms:
        return "reconciliation is off"
    try:
        spec = settings.target(target)
    except KeyError:
        return f"{target}: not a configured target"
    records = runtime.records
    where = f"{group or '(whole portal)'} on {target}"
    token = await records.acquire(target, group)
    if token is None:
        return f"{where}: another check runs"
    try:
        async with records.locked(target, group, token):
            if await _taken_since(ctx["state"], target, group, ticket):
                return f"{where}: taken again since"
            try:
                check, repaired = await _check(ctx, runtime.reconciler, spec, group)
            except Exception as exc:
                if is_connection_failure(exc):
                    raise
                if not isinstance(exc, PortalError):
                    log.exception("checking %s failed", where)
                delay = await records.failed(token, target, group, _describe(exc), interval_ms)
                log.info("checking %s failed (%s); next try in %.0f s", where, exc, delay / 1000)
                return f"{where}: failed, next try in {delay / 1000:.0f} s"
            next_due = schedule.next_due_ms(target, group, interval_ms, now_ms())
            await records.record(token, check, repaired, next_due, schedule.whole_portal(spec))
    except Exception as exc:
        if not is_connection_failure(exc):
            raise
        # Redis went away mid-check: the group comes back when its take lapses; the worker's
        # supervisor reports the outage.
        return f"{where}: interrupted ({type(exc).__name__})"
    return _summary(where, check.findings, repaired)


async def _check(ctx: dict[str, Any], reconciler: Reconciler,
                 spec: RentixTarget | TravtusTarget, group: str
                 ) -> tuple[GroupCheck, list[Finding]]:
    state = await reconciler.delivery.ledger.target_state(spec.name)
    if state.get("paused"):
        raise PausedTarget(f"the target is paused ({state['paused']})")
    if group == schedule.WHOLE_PORTAL:
        assert spec.mode == "per_listing"
        return await reconciler.check_portal(spec), []
    await _quiet(ctx["state"], group)
    return await reconciler.check_and_repair(spec, group, REPAIR)


async def _taken_since(redis: Redis, target: str, group: str, ticket: int) -> bool:
    due = await redis.zscore(f"{ks().RECONCILE_DUE}{target}", group)
    return due is None or int(due) != ticket


async def _quiet(redis: Redis, group: str) -> None:
    """Wait, a little, until no change of the group waits for a flush and none runs."""
    deadline = time.monotonic() + QUIET_WAIT_S
    while time.monotonic() < deadline:
        if await group_state.quiet(redis, group):
            return
        await asyncio.sleep(QUIET_POLL_S)


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, (PortalError, PausedTarget)) else \
        f"{type(exc).__name__}: {exc}"


def _summary(where: str, findings: list[Finding], repaired: list[Finding]) -> str:
    found, fixed = counts(findings), counts(repaired)
    if not findings:
        return f"{where}: in step"
    text = ", ".join(f"{n} {kind}" for kind, n in found.items() if n)
    mended = ", ".join(f"{n} {kind}" for kind, n in fixed.items() if n) or "nothing"
    log.info("checked %s: found %s; repaired %s", where, text, mended)
    return f"{where}: found {text}; repaired {mended}"
