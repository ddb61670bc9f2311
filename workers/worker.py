"""The arq worker process: its settings, start-up and shut-down, the scheduler and a heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

import orjson
from arq import func
from arq.connections import RedisSettings
from arq.worker import Worker

from bridge import constants as k
from bridge.clock import now_ms
from bridge.connections import check_redis
from bridge.delivery.flush import Delivery
from bridge.portals import adapters_for
from bridge.settings import Settings
from workers.jobs import flush_group
from workers.scheduler import Scheduler

HEARTBEAT_S = 5


async def heartbeat(ctx: dict[str, Any]) -> None:
    redis = ctx["redis"]
    while True:
        beat = {"at": now_ms(), "pid": os.getpid(), "host": socket.gethostname()}
        await redis.hset(k.WORKERS, ctx["worker_id"], orjson.dumps(beat))
        await asyncio.sleep(HEARTBEAT_S)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    await check_redis(ctx["redis"])
    ctx["adapters"] = adapters_for(settings)
    ctx["delivery"] = Delivery(ctx["redis"], settings, ctx["adapters"])
    ctx["worker_id"] = f"{socket.gethostname()}:{os.getpid()}"
    scheduler = Scheduler(ctx["redis"], settings.delivery.poll_interval_ms)
    ctx["tasks"] = [asyncio.create_task(scheduler.run()), asyncio.create_task(heartbeat(ctx))]


async def shutdown(ctx: dict[str, Any]) -> None:
    for task in ctx.get("tasks", []):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if "worker_id" in ctx:
        await ctx["redis"].hdel(k.WORKERS, ctx["worker_id"])
    for adapter in ctx.get("adapters", {}).values():
        await adapter.aclose()


def create_worker(settings: Settings) -> Worker:
    assert settings.redis_url
    delivery = settings.delivery
    return Worker(
        functions=[func(flush_group, name=k.FLUSH_JOB, max_tries=1_000_000)],
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        queue_name=k.QUEUE,
        max_jobs=delivery.max_jobs,
        job_timeout=delivery.job_timeout_s,
        keep_result=0,
        poll_delay=0.05,
        on_startup=startup,
        on_shutdown=shutdown,
        ctx={"settings": settings},
        handle_signals=True,
        health_check_interval=HEARTBEAT_S,
    )


def run_worker(settings: Settings) -> None:
    create_worker(settings).run()
