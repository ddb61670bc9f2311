"""Turns due groups into arq flush jobs. Every worker runs one; any number may run at once.

Taking a due group bumps its score a little, atomically, so the other workers' schedulers do not
enqueue it again meanwhile. Job ids are arq's own: what keeps a group to one flush at a time is
the flush's lease (``bridge/delivery/claims.py``), not the job id, so a job left behind by a
killed worker never blocks the next flush of its group.
"""

from __future__ import annotations

import asyncio
import logging

from arq.connections import ArqRedis

from bridge import constants as k
from bridge.clock import now_ms
from workers.jobs import is_connection_failure

log = logging.getLogger("workers.scheduler")

TAKE_DUE = """
local due, now, retry, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local groups = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)
for _, g in ipairs(groups) do redis.call('ZADD', due, 'XX', now + retry, g) end
return groups
"""

# If an enqueued flush never claims the group (it waits behind a running one), try again then.
RETRY_MS = 1_000


class Scheduler:
    def __init__(self, redis: ArqRedis, interval_ms: int, batch: int = 200) -> None:
        self.redis = redis
        self.interval = interval_ms / 1000
        self.batch = batch
        self._take = redis.register_script(TAKE_DUE)

    async def tick(self) -> int:
        groups = await self._take(keys=[k.DUE], args=[now_ms(), RETRY_MS, self.batch])
        enqueued = 0
        for raw in groups:
            group = raw.decode() if isinstance(raw, bytes) else raw
            job = await self.redis.enqueue_job(k.FLUSH_JOB, group, _queue_name=k.QUEUE)
            enqueued += job is not None
        return enqueued

    async def run(self) -> None:
        redis_down = False
        while True:
            try:
                await self.tick()
            except Exception as exc:  # a Redis blip must not end the scheduler
                if not is_connection_failure(exc):
                    log.exception("scheduling due groups failed; trying again")
                elif not redis_down:  # once per outage, not a traceback every tick
                    log.info("scheduling paused: Redis unavailable (%s: %s)",
                             type(exc).__name__, str(exc))
                redis_down = is_connection_failure(exc)
            else:
                if redis_down:
                    log.info("scheduling resumed: Redis is back")
                redis_down = False
            await asyncio.sleep(self.interval)
