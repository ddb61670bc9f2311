"""`[redis] jobs_url` on a single Redis: arq's queue on a Redis of its own, the state where it
always was; an event goes through, and flushing the queue's Redis loses nothing (jobs are
rebuilt from the due sets)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from bridge import constants as k
from bridge.ops import Operations
from tests.conftest import make_settings
from tests.support import crm
from tests.support.servers import redis_server
from tests.support.stack import running_stack

pytestmark = pytest.mark.processes

SECOND = "The second version of this listing, long enough for Rentix."


def test_the_queue_on_a_redis_of_its_own_carries_every_change(redis_url: str,
                                                              tmp_path: Path) -> None:
    with redis_server() as jobs, \
            running_stack(redis_url, tmp_path, redis={"jobs_url": jobs.url}) as stack:
        for n in range(5):
            stack.post(crm.upsert("north", f"apt-{n}", 1))
        stack.wait(lambda: len(stack.rentix_listings()) == 5, what="five listings on Rentix")
        queue = redis.Redis.from_url(jobs.url)
        assert queue.exists("arq:queue:listing-bridge:health-check")  # arq's, apart
        queue.flushall()  # soft state: nothing of it is needed
        for n in range(5):
            stack.post(crm.upsert("north", f"apt-{n}", 2, description=SECOND))
        stack.wait(lambda: all(
            listing["formData"].get("announcementDescription") == SECOND
            for listing in stack.rentix_listings().values()),
            what="every listing's second version on Rentix")


async def test_bridge_status_counts_the_jobs_where_they_are(redis_url: str) -> None:
    """With the queue apart, the operators' figures read it there, not on the state's Redis."""
    with redis_server() as jobs:
        settings = make_settings(redis_url, redis={"jobs_url": jobs.url})
        with redis.Redis.from_url(jobs.url) as queue:
            queue.zadd(k.QUEUE, {"job-1": 1, "job-2": 2})
        async with aioredis.Redis.from_url(redis_url) as state, \
                Operations(state, settings) as ops:
            assert (await ops.status()).queued_jobs == 2
