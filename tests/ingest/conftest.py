"""What the ingest tests share beyond tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client with bytes replies, as the workers' connection gives them: for the
    delivery side's scripts (claims, compaction) the ingest tests drive."""
    async with aioredis.Redis.from_url(redis_url) as connection:
        yield connection
