"""A worker's parts in the test process, against the sandbox portals over loopback HTTP: the
settings naming both sandbox portals, and the Redis client, adapters and folding store a
flush needs, closed afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bridge.portals import RentixAdapter, TravtusAdapter, adapters_for
from bridge.settings import Settings
from tests.conftest import make_settings
from tests.support.ingest import FoldingStore


def sandbox_settings(redis_url: str, sandbox_url: str, **rentix: Any) -> Settings:
    """Both portals on the sandbox, with its default credentials; ``rentix``: more of that
    target's settings (bulk_per_minute, …)."""
    return make_settings(redis_url, targets=[
        {"name": "rentix", "kind": "rentix", "base_url": f"{sandbox_url}/rentix/api/v1",
         "api_key": "sandbox", **rentix},
        {"name": "travtus", "kind": "travtus", "base_url": f"{sandbox_url}/travtus",
         "token_url": f"{sandbox_url}/travtus/oauth2/token", "client_id": "sandbox",
         "client_secret": "sandbox"}])


@dataclass
class Parts:
    redis: Redis
    adapters: dict[str, RentixAdapter | TravtusAdapter]
    store: FoldingStore


@contextlib.asynccontextmanager
async def worker_parts(settings: Settings) -> AsyncIterator[Parts]:
    assert settings.redis_url
    redis = Redis.from_url(settings.redis_url)
    adapters = adapters_for(settings)
    store = FoldingStore(redis, settings)
    try:
        yield Parts(redis, adapters, store)
    finally:
        await store.aclose()
        for adapter in adapters.values():
            await adapter.aclose()
        await redis.aclose()
