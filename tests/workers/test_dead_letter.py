"""A poison event goes aside and the rest goes on, through the worker's own scheduler tick:
the events around it are folded and their group's flush enqueued in the same tick; the event
set aside shows in /metrics, /api/overview and /api/inbox/dead, and an operator's retry (after
fixing its cause) or discard empties the list."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import orjson
import pytest
import redis
from arq.connections import ArqRedis

from bridge import constants as k
from bridge.app import create_app
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.settings import Settings
from tests.conftest import SECRET, make_settings
from tests.support import turns
from tests.support.servers import serve_app


def event(webhook_id: str, ref: str, version: int | str = 1) -> bytes:
    now = str(now_ms())
    return msgspec.msgpack.encode([webhook_id, now, "u", "g1", now, ref, str(version),
                                   orjson.dumps({"external_ref": ref}).decode()])


@pytest.fixture
def due_at_once(redis_url: str) -> Settings:
    return make_settings(redis_url, debounce={"window_ms": 0, "max_wait_ms": 0})


@pytest.fixture
async def arq_redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    client = ArqRedis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_the_scheduler_folds_around_a_poison_event_and_an_operator_retries_it(
    arq_redis: ArqRedis, due_at_once: Settings, r: redis.Redis
) -> None:
    r.rpush(ks().INBOX, event("wh-1", "apt-1"), event("wh-bad", "apt-bad", "v2"),
            event("wh-2", "apt-2"))
    scheduler = turns.scheduler(arq_redis, due_at_once)
    assert await turns.woken_tick(scheduler) == 1  # g1's flush, in the tick that folded it
    assert r.llen(ks().INBOX) == 0 and r.zcard(k.QUEUE) == 1
    assert r.hexists(f"{ks().LISTING}apt-1", "v") and r.hexists(f"{ks().LISTING}apt-2", "v")
    shown_then_retried(due_at_once)
    await turns.woken_tick(scheduler)
    assert r.hget(f"{ks().LISTING}apt-bad", "v") == "2" and r.llen(ks().INBOX_DEAD) == 0


def shown_then_retried(settings: Settings) -> None:
    """What the web process shows of the event set aside; then an operator's retry."""
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        assert 'listing_bridge_inbox_dead_events{tenant="default"} 1.0' in http.get("/metrics").text
        inbox = http.get("/api/overview").json()["inbox"]
        assert inbox["dead"] == 1 and inbox["dead_oldest_at"] <= now_ms()
        [dead] = http.get("/api/inbox/dead").json()["dead"]
        assert (dead["id"], dead["group"], dead["refs"]) == ("wh-bad", "g1", ["apt-bad"])
        assert "version" in dead["error"]
        assert "inbox/dead" in http.get("/dashboard/").text
        assert "wh-bad" in http.get("/dashboard/inbox/dead").text
        missing = http.post("/api/inbox/dead/retry", json={"ids": ["wh-none"]})
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
        assert http.post("/api/inbox/dead/retry", json={}).status_code == 400
        # The cause fixed (here: the entry itself), the retry folds it.
        with redis.Redis.from_url(str(settings.redis_url)) as raw:
            record: bytes = raw.lindex(ks().INBOX_DEAD, 0)  # type: ignore[assignment]
            raw.lset(ks().INBOX_DEAD, 0, record.replace(b"\xa2v2", b"\xa12"))
        retried = http.post("/api/inbox/dead/retry", json={"ids": ["wh-bad"]}).json()
        assert [e["id"] for e in retried["retried"]] == ["wh-bad"]
        assert http.get("/api/overview").json()["inbox"]["dead"] == 0


async def test_an_operator_discards_a_poison_event_through_the_api(
    arq_redis: ArqRedis, due_at_once: Settings, r: redis.Redis
) -> None:
    r.rpush(ks().INBOX, b"not msgpack at all", event("wh-1", "apt-1"))
    await turns.woken_tick(turns.scheduler(arq_redis, due_at_once))
    discarded_through_the_api(due_at_once)
    assert r.llen(ks().INBOX_DEAD) == 0 and r.hexists(f"{ks().LISTING}apt-1", "v")


def discarded_through_the_api(settings: Settings) -> None:
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        discarded = http.post("/api/inbox/dead/discard", json={"all": True}).json()
        assert [e["webhook_id"] for e in discarded["discarded"]] == [None]
        assert 'listing_bridge_inbox_dead_events{tenant="default"} 0.0' in http.get("/metrics").text


def bridge(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=True)


@pytest.mark.processes
async def test_bridge_status_and_bridge_inbox_dead_show_and_clear_it(
    arq_redis: ArqRedis, due_at_once: Settings, r: redis.Redis, tmp_path: Path
) -> None:
    r.rpush(ks().INBOX, event("wh-bad", "apt-bad", "v2"), event("wh-1", "apt-1"))
    await turns.woken_tick(turns.scheduler(arq_redis, due_at_once))
    config = tmp_path / "bridge.toml"
    config.write_text(f'redis_url = "{due_at_once.redis_url}"\n[webhook]\n'
                      f'secrets = ["{SECRET}"]\n')
    assert orjson.loads(bridge(config, "status", "--json").stdout)["inbox"]["dead"] == 1
    assert "SET ASIDE 1 event(s)" in bridge(config, "status").stdout
    listed = bridge(config, "inbox", "dead", "list").stdout
    assert "wh-bad" in listed and "version" in listed
    assert "discarded 1 event(s): wh-bad" in bridge(config, "inbox", "dead", "discard",
                                                     "wh-bad").stdout
    assert orjson.loads(bridge(config, "status", "--json").stdout)["inbox"]["dead"] == 0
