"""The webhook's store refuses events (StorageFull) at the inbox's ceiling, inside the accept
script, and at the memory share read from INFO; what it refused is stored once there is room.
The fold runs whatever Redis's memory."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
import redis.asyncio as aioredis

from bridge.clock import now_ms
from bridge.ingest import store
from bridge.ingest.admission import StorageFull
from bridge.ingest.events import ValidEvent
from bridge.ingest.inbox import Inbox
from bridge.ingest.store import EventStore
from tests.conftest import make_settings
from tests.support.ingest import Scripts
from tests.support.redis_servers import redis_binary, server, valkey_binary


def change(ref: str, version: int) -> ValidEvent:
    return ValidEvent("listing.updated", "g1", now_ms(), [(ref, version, b'{"rent":900}')])


async def test_a_full_inbox_refuses_new_events_and_answers_redeliveries(
    client: aioredis.Redis, redis_url: str
) -> None:
    settings = make_settings(redis_url, webhook={"max_inbox_events": 3})
    store = EventStore(client, redis_url, settings.webhook, settings.debounce)
    try:
        for n in range(3):
            assert not (await store.put(f"wh-{n}", change(f"apt-{n}", 1), now_ms())).duplicate
        with pytest.raises(StorageFull, match="max_inbox_events"):
            await store.put("wh-3", change("apt-3", 1), now_ms())
        # Stored before: answered as a redelivery, and nothing more waits.
        assert (await store.put("wh-0", change("apt-0", 1), now_ms())).duplicate
        assert await client.llen("lb:{t:default}:inbox") == 3  # type: ignore[misc]

        await Inbox(client, settings).drain()
        # The refused event was not marked seen: its retry is stored.
        assert not (await store.put("wh-3", change("apt-3", 1), now_ms())).duplicate
    finally:
        await store.aclose()


async def test_redis_near_its_memory_ceiling_refuses_new_events(
    client: aioredis.Redis, redis_url: str
) -> None:
    settings = make_settings(redis_url)
    store = EventStore(client, redis_url, settings.webhook, settings.debounce)
    try:
        await store.memory.refresh()
        used = store.memory.used
        await client.config_set("maxmemory", used + 10_000_000)
        await store.memory.refresh()
        assert not (await store.put("wh-0", change("apt-0", 1), now_ms())).duplicate

        await client.config_set("maxmemory", int(used / settings.webhook.max_memory_share))
        await store.memory.refresh()
        with pytest.raises(StorageFull, match="max_memory_share"):
            await store.put("wh-1", change("apt-1", 1), now_ms())
    finally:
        await client.config_set("maxmemory", 0)
        await store.aclose()


@pytest.mark.servers
@pytest.mark.parametrize("binary", [redis_binary, valkey_binary], ids=["redis", "valkey"])
def test_the_fold_runs_on_a_redis_past_its_maxmemory(binary: Callable[[], str]) -> None:
    """Its script is flagged allow-oom (Redis >= 7.0 and Valkey read the shebang): the inbox
    it empties can never be what keeps Redis full."""
    with server(binary(), aof=None) as srv:
        r = srv.client()
        settings = make_settings(srv.url)
        scripts = Scripts(r, settings)
        for n in range(200):
            event = change(f"apt-{n}", 1)
            at = now_ms()
            store.accept_now(r, f"wh-{n}", at, store.entry(f"wh-{n}", at, event),
                             settings.webhook.dedupe_ttl_seconds)
        r.config_set("maxmemory", int(r.info("memory")["used_memory"]) - 64 * 1024)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            r.set("probe", "x")

        assert scripts.fold_all() == 200
        assert r.llen("lb:{t:default}:inbox") == 0
        r.close()
