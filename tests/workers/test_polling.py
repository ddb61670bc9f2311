"""A scheduler's loop survives every error and says so once per cause, not once per tick."""

from __future__ import annotations

import asyncio
import logging

import pytest

from workers.scheduler import Polling


class Refused(Polling):
    """Ticks that fail with ``errors`` in turn, then succeed."""

    what = "folding the inbox"
    every_s = 0.0

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.ticks = 0
        self.done = asyncio.Event()

    async def tick(self) -> int:
        self.ticks += 1
        if self.ticks <= len(self.errors):
            raise self.errors[self.ticks - 1]
        self.done.set()
        return 0


async def test_a_persistent_error_is_logged_once_per_cause_and_its_end_once(
    caplog: pytest.LogCaptureFixture
) -> None:
    oom = RuntimeError("OOM command not allowed when used memory > 'maxmemory'")
    loop = Refused([oom] * 50 + [ValueError("another cause")] * 3)
    with caplog.at_level(logging.INFO, logger="workers.scheduler"):
        task = asyncio.create_task(loop.run())
        await asyncio.wait_for(loop.done.wait(), 10)
        task.cancel()
    lines = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines == [
        ("ERROR", "folding the inbox failed; trying again every tick", True),
        ("ERROR", "folding the inbox failed; trying again every tick", True),
        ("INFO", "folding the inbox works again", False),
    ]
    assert [str(r.exc_info[1]) for r in caplog.records if r.exc_info] == [
        str(oom), "another cause"]
