"""What an operator can see and do; the same object serves the ``bridge`` commands, the
dashboard's pages and JSON API, and /metrics.

    actions.py  what an operator does (held syncs, quarantine, pause/resume)
    reads.py    the read models, built from Redis
    models.py   the read models themselves (the API's JSON, the pages' data)
    figures.py  per-minute series, totals, percentiles, the rate-limit budget
"""

from __future__ import annotations

from types import TracebackType

from redis.asyncio import Redis

from bridge.ops.actions import Actions, HeldSyncChanged, NotFound, OperationError
from bridge.ops.reads import Reads
from bridge.settings import Settings

__all__ = ["HeldSyncChanged", "NotFound", "OperationError", "Operations"]


class Operations(Actions, Reads):
    """An operator's actions and reads over one Redis. ``aclose`` (or ``async with``) closes
    the portal adapters the reads build for their comparisons."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        Actions.__init__(self, redis, settings)
        Reads.__init__(self, redis, settings)

    async def __aenter__(self) -> Operations:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()
