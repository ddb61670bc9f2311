"""What an operator can see and do; the same object serves the ``bridge`` commands, the
dashboard's pages and JSON API, and /metrics.

    actions.py  what an operator does (held syncs, quarantine, pause/resume)
    reads.py    the read models, built from Redis
    models.py   the read models themselves (the API's JSON, the pages' data)
    figures.py  per-minute series, totals, percentiles, the rate-limit budget
    trace.py    a listing's story: events, flush decisions and portal calls (bridge trace)
"""

from __future__ import annotations

from types import TracebackType

from redis.asyncio import Redis

from bridge.ops.actions import Actions, HeldSyncChanged, NotFound, OperationError
from bridge.ops.trace import Traces
from bridge.settings import Settings

__all__ = ["HeldSyncChanged", "NotFound", "OperationError", "Operations"]


class Operations(Actions, Traces):
    """An operator's actions and reads over one Redis. ``aclose`` (or ``async with``) closes
    the portal adapters the reads build for their comparisons."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        Actions.__init__(self, redis, settings)
        Traces.__init__(self, redis, settings)

    async def __aenter__(self) -> Operations:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()
