"""The inbox: events the webhook stored and the workers have not folded into the state yet.

The webhook only dedupes an event and appends it to ``lb:inbox``, so its answer waits for one
short script (``bridge/ingest/store.py``). Every worker's scheduler folds the inbox, oldest first,
before it takes the due groups (``workers/scheduler.py``): ordering, deletions, the debounce
marks, the listings' stories and the counters are the fold's, exactly as the webhook's script
did them before, with the time each event was received. A folded change is scheduled in the
same tick, so the fold adds no delay of its own to delivery.

One script call folds a batch and removes it from the inbox, reading only the entries it folds
(a snapshot may be a megabyte), and runs even on a Redis past its maxmemory (``allow-oom``): a
worker killed or frozen mid-fold folded nothing, Redis's AOF holds the batch's effects whole or
not at all, and two workers never fold the same event (their calls run one after the other,
each on what the other left).

The same call removes compacted tombstones that no event still waiting (or being stored) was
received before the expiry of (``lb:tombstones``): every tick calls it at least once, an empty
inbox too, so tombstones go on time when nothing arrives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis

from bridge import constants as k
from bridge.ingest.store import fold_script
from bridge.settings import Settings

# One fold call takes at most this many events, and stops taking more once they name this
# many listings (a snapshot of a large group is folded alone): each call blocks Redis while
# it runs, ~50 µs per listing.
MAX_EVENTS = 100
MAX_LISTINGS = 1_000
# A scheduler tick folds for at most this long before it takes the due groups: a backlog (the
# workers were away) never holds back the flushes of what is already folded.
DRAIN_S = 0.5


@dataclass(frozen=True)
class Folded:
    events: int  # folded by this call
    applied: int  # listing changes they made (stale and out-of-horizon ones make none)
    left: int  # events still in the inbox


class Inbox:
    """Folds ``lb:inbox`` into the desired state, on the workers' Redis client."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._fold = redis.register_script(fold_script(
            settings.webhook, settings.debounce, settings.trace, settings.retention))

    async def fold(self, max_events: int = MAX_EVENTS,
                   max_listings: int = MAX_LISTINGS) -> Folded:
        """Fold the oldest events (one call, atomic)."""
        events, applied, left = await self._fold(args=[max_events, max_listings])
        return Folded(int(events), int(applied), int(left))

    async def drain(self, budget_s: float = DRAIN_S) -> int:
        """Fold until the inbox is empty or ``budget_s`` has passed; how many events. One call
        at least, however empty the inbox: it removes expired tombstones too."""
        deadline = time.monotonic() + budget_s
        total = 0
        while True:
            folded = await self.fold()
            total += folded.events
            if not folded.left or time.monotonic() >= deadline:
                return total

    async def waiting(self) -> int:
        """Events stored and not folded yet."""
        return int(await self._redis.llen(k.INBOX))  # type: ignore[misc]
