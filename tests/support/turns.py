"""The workers' scheduler in tests: built for a configuration's tenants, and a tick as the
webhook's wake-up would make it (tests that write an inbox or a due set directly wake the
tenant themselves: the webhook's script does it in production)."""

from __future__ import annotations

from arq.connections import ArqRedis

from bridge import constants as k
from bridge import tenancy
from bridge.settings import Settings
from workers.scheduler import Scheduler
from workers.tenants import Runtimes


def scheduler(redis: ArqRedis, settings: Settings, interval_ms: int = 50) -> Scheduler:
    return Scheduler(redis, interval_ms, Runtimes(redis, settings),
                     max_jobs=settings.delivery.max_jobs)


async def woken_tick(scheduler: Scheduler, tenant: str = tenancy.DEFAULT) -> int:
    """Wake ``tenant`` (as a webhook or a job's end does), then tick; the jobs enqueued."""
    await scheduler.redis.zadd(k.WAKE, {tenant: 0})
    return await scheduler.tick()
