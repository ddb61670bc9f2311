"""A fold that fails never stops the flushes and sends of what is folded already: the scheduler
logs it once per cause and takes the due groups and outboxes in the same tick. Against the real
test Redis and the real fold script, with an inbox Redis cannot read as a list (one entry the
fold cannot read is set aside instead: tests/ingest/test_dead_letter.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis

from bridge import constants as k
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.settings import Settings
from tests.support import turns


@pytest.fixture
async def arq_redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    client = ArqRedis.from_url(redis_url)
    yield client
    await client.aclose()


async def queued_jobs(client: ArqRedis) -> int:
    return int(await client.zcard(k.QUEUE))


async def test_a_failing_fold_is_logged_once_and_due_work_is_still_taken(
    arq_redis: ArqRedis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await arq_redis.set(ks().INBOX, b"not a list")  # every fold call fails: WRONGTYPE
    scheduler = turns.scheduler(arq_redis, settings, 20)
    with caplog.at_level(logging.INFO, logger="workers.scheduler"):
        for round_ in range(3):
            await arq_redis.zadd(ks().DUE, {f"g{round_}": now_ms()})
            await arq_redis.zadd(ks().SENDERS, {"rentix": now_ms()})
            assert await turns.woken_tick(scheduler) == 2  # the group's flush and the outbox's send
        # Once the key is gone the fold works again, and says so once.
        await arq_redis.delete(ks().INBOX)
        await turns.woken_tick(scheduler)
    assert await queued_jobs(arq_redis) == 6
    lines = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines == [("ERROR", "folding the inbox failed; trying again every tick", True),
                     ("INFO", "folding the inbox works again", False)]
