"""The arq worker: flush jobs, the due-group scheduler and a heartbeat."""

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
from bridge.connections import check_redis
from bridge.ledger import now_ms
from bridge.portals import RentixAdapter, TravtusAdapter
from bridge.settings import RentixTarget, Settings
from workers.delivery import Delivery
from workers.scheduler import Scheduler

HEARTBEAT_S = 5


async def flush_group(ctx: dict[str, Any], group: str) -> str:
    delivery: Delivery = ctx["delivery"]
    return await delivery.flush(group)


def build_adapters(settings: Settings) -> dict[str, RentixAdapter | TravtusAdapter]:
    adapters: dict[str, RentixAdapter | TravtusAdapter] = {}
    for t in settings.targets:
        if isinstance(t, RentixTarget):
            adapters[t.name] = RentixAdapter(t.name, t.base_url, t.api_key,
                                             deletion_behaviour=t.delete_behaviour)
        else:
            adapters[t.name] = TravtusAdapter(t.name, t.base_url, t.token_url, t.client_id,
                                              t.client_secret)
    return adapters


async def heartbeat(ctx: dict[str, Any]) -> None:
    redis = ctx["redis"]
    while True:
        beat = {"at": now_ms(), "pid": os.getpid(), "host": socket.gethostname()}
        await redis.hset(k.WORKERS, ctx["worker_id"], orjson.dumps(beat))
        await asyncio.sleep(HEARTBEAT_S)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    await check_redis(ctx["redis"])
    ctx["adapters"] = build_adapters(settings)
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
