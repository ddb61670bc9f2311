"""Admission with headroom: the webhook refuses events (503, Retry-After) before Redis is full.

A ``202`` is a promise the workers keep later: the fold turns each inbox entry into listing state,
flush claims and stories, all of which need memory. Redis with ``noeviction`` refuses every write
once ``used_memory`` passes ``maxmemory``, so the webhook stops admitting at
``[redis] max_memory_share`` of it (and at ``[webhook] max_inbox_events`` waiting events, checked
inside the accept script), leaving the rest for the fold and the flushes.

The memory share is read from ``INFO memory`` off the request path: a background task refreshes
it at most every ``REFRESH_S``, and the bytes stored since the last reading are added to it, so
a burst between two readings is counted too. Until a first reading (or while INFO fails) events
are admitted: Redis itself still refuses writes at ``maxmemory`` (a 503 as well).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisClusterException, RedisError

from bridge.connections import fullest
from bridge.ingest.script_client import StorageUnavailable

log = logging.getLogger("bridge.ingest.admission")

REFRESH_S = 1.0


class StorageFull(StorageUnavailable):
    """Redis is near the ceiling the bridge keeps below: retry once the workers have folded."""


class MemoryGauge:
    """``used_memory / maxmemory`` as last read, plus what was stored since; refreshed by a task
    started with the first request (never on the request's own path)."""

    def __init__(self, redis: Redis, ceiling: float, every_s: float = REFRESH_S) -> None:
        self._redis = redis
        self.ceiling = ceiling
        self.every_s = every_s
        self.used = 0
        self.maxmemory = 0  # 0: no reading yet, or no maxmemory set (no ceiling)
        self._since = 0  # bytes stored since the last reading
        self._task: asyncio.Task[None] | None = None

    def full(self) -> bool:
        """Is Redis at or past the ceiling? Starts the refresher on first use."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())
        return self.maxmemory > 0 and (self.used + self._since) >= self.ceiling * self.maxmemory

    def stored(self, size: int) -> None:
        self._since += size

    async def refresh(self) -> None:
        # On a cluster the fullest master decides (each tenant's writes go to one node; a
        # ceiling per tenant would read every node every second for little gain).
        self.used, self.maxmemory = fullest(await self._redis.info("memory"))
        self._since = 0

    async def _refresh_forever(self) -> None:
        while True:
            # Redis away: the webhook's own script call says what is wrong. A cluster's client
            # raises more than RedisError mid-failover (see store.CLUSTER_TROUBLE): the
            # refresher must outlive it, or the ceiling is never read again.
            with contextlib.suppress(RedisError, OSError, RedisClusterException, RuntimeError,
                                     AttributeError):
                await self.refresh()
            await asyncio.sleep(self.every_s)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
