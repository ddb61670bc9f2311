"""The Targets page after real flushes against the sandbox over HTTP (in process): Rentix's
budgets as its single writes (PUTs, a hide) reported them, and the Travtus token's expiry as
the flush that fetched it recorded it; what an operator reads on the page and the API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from bridge.app import create_app
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.dashboard.views import clock
from bridge.delivery.flush import Delivery
from bridge.ingest.events import parse_event
from bridge.settings import Settings
from tests.support import crm
from tests.support.ingest import FoldingStore
from tests.support.inprocess import sandbox_settings, worker_parts
from tests.support.servers import serve_app

# Real flushes in this process against the sandbox (tests/support/tiers.py).
pytestmark = pytest.mark.flows

GROUP = "budgets"
TOKEN_TTL_S = 3600  # the sandbox's default token lifetime


@dataclass
class Worker:
    """A worker's delivery and the webhook's store, in this process."""

    redis: Redis
    delivery: Delivery
    store: FoldingStore
    events: int = 0

    async def upsert(self, ref: str, version: int, **fields: Any) -> None:
        self.events += 1
        event = parse_event(orjson.dumps(crm.upsert(GROUP, ref, version, **fields)))
        await self.store.put(f"msg_budget_{self.events}", event, now_ms())

    async def flush(self) -> None:
        deadline = time.monotonic() + 15
        while not (outcome := await self.delivery.flush(GROUP)).done:
            assert time.monotonic() < deadline, outcome
            await asyncio.sleep(0.05)  # another flush's lease: come back shortly


@pytest.fixture
def settings(redis_url: str, sandbox_url: str) -> Settings:
    return sandbox_settings(redis_url, sandbox_url)


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    async with worker_parts(settings) as parts:
        yield Worker(parts.redis, Delivery(parts.redis, settings, parts.adapters), parts.store)


@pytest.fixture
async def dashboard(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    with serve_app(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            yield http


async def views(dashboard: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    answer = await dashboard.get("/api/targets")
    assert answer.status_code == 200, answer.text
    return {t["name"]: t for t in answer.json()["targets"]}


async def test_single_writes_report_the_general_budget(worker: Worker,
                                                       dashboard: httpx.AsyncClient) -> None:
    for n in range(3):
        await worker.upsert(f"b-{n}", 1)
    await worker.flush()  # three PUTs, below the bulk threshold

    general = (await views(dashboard))["rentix"]["outbox"]["budgets"]["general"]
    assert general is not None, "118 PUTs later, still not reported"
    assert general["limit"] == 300 and general["remaining"] <= 297
    assert general["resets_in_ms"] > 0
    first = general
    page = (await dashboard.get("/dashboard/targets")).text
    assert f"general: {general['remaining']}/300" in page
    assert "general: <span class=\"muted\">not reported yet" not in page

    await worker.upsert("b-1", 2, status="hidden")
    await worker.flush()  # a hide: one more PUT, and its headers
    general = (await views(dashboard))["rentix"]["outbox"]["budgets"]["general"]
    assert general["remaining"] < first["remaining"] and general["at"] >= first["at"]
    # Nothing went by bulk: that bucket is still unreported.
    assert (await views(dashboard))["rentix"]["outbox"]["budgets"]["bulk"] is None


async def test_travtus_shows_the_token_expiry(worker: Worker,
                                              dashboard: httpx.AsyncClient) -> None:
    assert (await views(dashboard))["travtus"]["token_expires_at"] is None
    before = now_ms()
    await worker.upsert("t-1", 1)
    await worker.flush()  # fetches a token, then syncs the group

    expires = (await views(dashboard))["travtus"]["token_expires_at"]
    assert expires is not None
    assert before + TOKEN_TTL_S * 1000 <= expires <= now_ms() + TOKEN_TTL_S * 1000
    assert int(await worker.redis.hget(f"{ks().TARGET}travtus", "token_expires_at")) == expires
    page = (await dashboard.get("/dashboard/targets")).text
    assert clock(expires) in page

    # The same token serves the next sync: it is not written again.
    await worker.redis.hdel(f"{ks().TARGET}travtus", "token_expires_at")
    await worker.upsert("t-1", 2, deposit=700)
    await worker.flush()
    assert await worker.redis.hget(f"{ks().TARGET}travtus", "token_expires_at") is None
