"""Operations over the test Redis, with listings stored by the real ingest script."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, cast

import orjson
import pytest
from redis.asyncio import Redis

from bridge.clock import now_ms
from bridge.ingest.events import parse_event
from bridge.ops import Operations
from bridge.reconcile.compare import GroupCheck, Kind
from bridge.reconcile.records import Records
from bridge.settings import Settings
from tests.conftest import make_settings
from tests.support.ingest import FoldingStore

OFFLINE = "http://127.0.0.1:9"  # never called: the reads only map listings
TARGETS = [
    {"name": "rentix", "kind": "rentix", "base_url": f"{OFFLINE}/rentix/api/v1",
     "api_key": "k"},
    {"name": "travtus", "kind": "travtus", "base_url": f"{OFFLINE}/travtus",
     "token_url": f"{OFFLINE}/travtus/oauth2/token", "client_id": "c", "client_secret": "s"},
]

Ingest = Callable[[dict[str, Any]], Awaitable[None]]


@pytest.fixture
def ops_settings(redis_url: str) -> Settings:
    return make_settings(redis_url, targets=TARGETS)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def ops(redis: Redis, ops_settings: Settings) -> AsyncIterator[Operations]:
    async with Operations(redis, ops_settings) as operations:
        yield operations


@pytest.fixture
async def ingest(redis: Redis, ops_settings: Settings) -> AsyncIterator[Ingest]:
    """Store a CRM event as the webhook does, and fold it as a worker does (their scripts)."""
    assert ops_settings.redis_url
    store = FoldingStore(redis, ops_settings)
    count = 0

    async def put(event: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        await store.put(f"msg_{count}", parse_event(orjson.dumps(event)), now_ms())

    yield put
    await store.aclose()


async def record_check(redis: Redis, target: str, group: str,
                       findings: Sequence[tuple[str, str, str]] = (),
                       repaired: tuple[str, ...] = ()) -> int:
    """Record one periodic check as a worker does (``bridge/reconcile/records.py``): findings
    as (ref, kind, detail), those of the ``repaired`` kinds repaired."""
    records = Records(redis)
    token = await records.acquire(target, group)
    assert token is not None
    check = GroupCheck(target, group)
    for ref, kind, detail in findings:
        check.add(ref, cast(Kind, kind), detail)
    fixed = [f for f in check.findings if f.kind in repaired]
    return await records.record(token, check, fixed, now_ms() + 60_000,
                                whole_portal=target == "rentix")
