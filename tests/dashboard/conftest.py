"""A served bridge app (real uvicorn) with its dashboard, and a way to seed delivery state
through the real ledger, as a worker would have written it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio import Redis

from bridge.app import create_app
from bridge.clock import now_ms
from bridge.delivery.ledger import Held, Ledger, Quarantined
from bridge.reconcile.records import Records
from bridge.settings import Settings
from tests.conftest import make_settings
from tests.ops.conftest import record_check
from tests.support.ingest import fold
from tests.support.servers import serve_app

TARGETS = [
    {"name": "rentix", "kind": "rentix", "base_url": "http://127.0.0.1:9/rentix/api/v1",
     "api_key": "k"},
    {"name": "travtus", "kind": "travtus", "base_url": "http://127.0.0.1:9/travtus",
     "token_url": "http://127.0.0.1:9/travtus/oauth2/token", "client_id": "c",
     "client_secret": "s"},
]
TOKEN = "dashboard-test-token"


def dashboard_settings(redis_url: str, **overrides: Any) -> Settings:
    return make_settings(redis_url, targets=TARGETS, **overrides)


def run(redis_url: str, action: Callable[[Ledger], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        redis = Redis.from_url(redis_url)
        try:
            return await action(Ledger(redis))
        finally:
            await redis.aclose()

    return asyncio.run(go())


def seed_problems(redis_url: str) -> None:
    """One held travtus sync (would delete two listings) and two quarantined listings."""
    async def seed(ledger: Ledger) -> None:
        at = now_ms()
        await ledger.redis.sadd("lb:{t:default}:groups", "mass", "bad")
        await ledger.hold("travtus", "mass", Held("d-mass", "max_delete_count: 2 > 1",
                                                  ["apt-8", "apt-9"], 2, at))
        await ledger.quarantine("travtus", {ref: Quarantined(
            f"d-{ref}", "bad", "invalid_unit_type", "unit_type is not allowed", "unit_type", at)
            for ref in ("apt-1", "apt-2")})

    run(redis_url, seed)


def seed_drift(redis_url: str) -> None:
    """A full reconciliation pass as the workers record it: on Rentix a drifted listing repaired
    and a hand-made one found by reading the whole portal; a Travtus check failing."""
    async def seed(ledger: Ledger) -> None:
        redis = ledger.redis
        await redis.sadd("lb:{t:default}:groups", "west")
        await record_check(redis, "rentix", "west", [("apt-1", "drift", "price")],
                           repaired=("drift",))
        await record_check(redis, "rentix", "", [("#7", "unknown", "made on the portal, not "
                                                  "linked to any CRM listing")])
        records = Records(redis)
        token = await records.acquire("travtus", "west")
        assert token is not None
        await records.failed(token, "travtus", "west", "transient: 503 server_error",
                             86_400_000)

    run(redis_url, seed)


@pytest.fixture
def app_settings(redis_url: str) -> Settings:
    return dashboard_settings(redis_url)


@pytest.fixture
def folded(app_settings: Settings, r: redis.Redis) -> Callable[[], int]:
    """Fold what the webhook stored into the state, as a worker would (none runs here)."""
    return lambda: fold(r, app_settings)


@pytest.fixture
def client(app_settings: Settings) -> Iterator[httpx.Client]:
    with serve_app(create_app(app_settings)) as url, \
            httpx.Client(base_url=url, timeout=10) as http:
        yield http
