"""The webhook's accept script and the workers' fold, called directly with explicit arguments:
the state, stories and counters they leave are the real ones, without a web or worker process."""

from __future__ import annotations

import msgspec
import redis
import redis.asyncio as aioredis

from bridge.ingest.events import ValidEvent
from bridge.ingest.inbox import FoldSettings, Inbox, fold_now
from bridge.ingest.store import EventStore, Stored, accept_now
from bridge.settings import RetentionSettings, Settings


class Scripts:
    def __init__(self, r: redis.Redis, settings: Settings,
                 retention: RetentionSettings | None = None) -> None:
        self.r = r
        self.ttl = settings.webhook.dedupe_ttl_seconds
        self.fold = FoldSettings.of(settings, retention)

    def __call__(self, webhook_id: str, now: int | str, kind: str, group: str,
                 occurred: int | str, *items: str | int) -> list[int]:
        """Store one event (webhook id, received at, kind letter, group, occurred_at, then
        ref, version, body per listing) and fold the inbox: [1 stored or 0 duplicate, how many
        listing changes the fold applied]."""
        entry = msgspec.msgpack.encode(
            [str(x) for x in (webhook_id, now, kind, group, occurred, *items)])
        status = accept_now(self.r, webhook_id, int(now), entry, self.ttl)
        return [status, self.fold_all()]

    def fold_all(self) -> int:
        """Fold every event waiting; how many listing changes they applied."""
        applied = 0
        while True:
            folded = fold_now(self.r, self.fold)
            applied += folded.applied
            if not folded.left:
                return applied


class FoldingStore(EventStore):
    """The webhook's store, whose ``put`` is followed by a worker's fold of the inbox (the
    real ``Inbox``): what the tests read after it is the state the event folded into."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        assert settings.redis_url
        super().__init__(redis, settings.redis_url, settings.webhook, settings.debounce,
                         trace=settings.trace, retention=settings.retention)
        self.inbox = Inbox(redis, settings)

    async def put(self, webhook_id: str, event: ValidEvent, now_ms: int) -> Stored:
        stored = await super().put(webhook_id, event, now_ms)
        while (await self.inbox.fold()).left:
            pass
        return stored


def fold(r: redis.Redis, settings: Settings) -> int:
    """Fold everything the webhook stored, as a worker does: for tests that post through a
    web app with no worker running. How many listing changes it applied."""
    return Scripts(r, settings).fold_all()
