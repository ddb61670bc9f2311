"""Redis under memory pressure (issue 27): a redis-server of its own with a small maxmemory, the
web app in-process, real ``bridge worker`` processes, the sandbox portals as witnesses."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import SECRET
from tests.support import crm
from tests.support.redis_servers import Server, server
from tests.support.stack import Stack, running_stack
from tests.workers.test_redis_outage import (
    WENT_AWAY,
    delivered,
    notable,
    post_until_accepted,
    upsert,
)

MAXMEMORY = 6 * 1024 * 1024
GROUPS = [f"mem-{n}" for n in range(4)]
REFS = [(group, f"{group}-apt-{i}") for group in GROUPS for i in range(5)]
# A long description: each event is ~2.3 KB, so the inbox fills in about a thousand events.
PADDING = "Bright apartment near the centre. " * 50  # Rentix takes up to 2,000
# Delivering 20 listings to both portals, after folding the backlog.
DELIVERY_S = 90.0


@pytest.fixture
def small_redis() -> Iterator[Server]:
    with server(None, "--maxmemory", str(MAXMEMORY)) as srv:
        yield srv


def event(group: str, ref: str, version: int) -> dict[str, Any]:
    return upsert(group, ref, version) | {
        "listing": upsert(group, ref, version)["listing"] | {"description": PADDING}}


def fill(stack: Stack) -> tuple[dict[tuple[str, str], int], httpx.Response]:
    """Post new versions, round robin over the listings, until the webhook refuses one: the
    latest acknowledged version of each listing, and the refusal."""
    latest: dict[tuple[str, str], int] = {}
    for version in itertools.count(1):
        for group, ref in REFS:
            response = crm.post(stack.bridge, SECRET, event(group, ref, version))
            if response.status_code != 202:
                return latest, response
            latest[group, ref] = version
    raise AssertionError("unreachable")


def used_share(client: redis.Redis) -> float:
    info = client.info("memory")
    return int(info["used_memory"]) / int(info["maxmemory"])


def start_workers_and_deliver(stack: Stack, latest: dict[tuple[str, str], int]) -> None:
    """Two workers deliver every acknowledged state, and the webhook accepts again."""
    for _ in range(2):
        stack.start_worker()
    stack.wait(lambda: delivered(stack, latest), timeout=DELIVERY_S,
               what="every acknowledged state")
    post_until_accepted(stack, event(*REFS[0], 10_000), timeout=30)
    latest[REFS[0]] = 10_000
    stack.wait(lambda: delivered(stack, latest), timeout=DELIVERY_S, what="a new event")


def assert_workers_kept_running(stack: Stack) -> None:
    alive = [process.poll() is None for process in stack.workers]
    logs = [notable(stack.log_of(process)) for process in stack.workers]
    assert alive == [True] * len(alive), logs
    stack.stop_workers()
    for process in stack.workers:
        assert process.returncode == 0, notable(stack.log_of(process))


@pytest.mark.processes
def test_the_webhook_refuses_before_redis_is_full_and_workers_deliver_every_acknowledged_state(
    small_redis: Server, tmp_path: Path
) -> None:
    client = small_redis.client()
    with running_stack(small_redis.url, tmp_path, workers=0) as stack:
        latest, refused = fill(stack)

        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["type"] == "storage_full"
        assert refused.headers["retry-after"]
        # Refused with room to spare: Redis itself still takes writes.
        assert used_share(client) < 0.9
        assert client.set("lb:test:probe", "x")
        client.delete("lb:test:probe")

        start_workers_and_deliver(stack, latest)
        assert_workers_kept_running(stack)
    client.close()


@pytest.mark.processes
def test_workers_started_against_a_full_redis_fold_the_inbox_and_deliver_without_exiting(
    small_redis: Server, tmp_path: Path
) -> None:
    client = small_redis.client()
    with running_stack(small_redis.url, tmp_path, workers=0) as stack:
        latest, _ = fill(stack)
        # Full anyway (maxmemory lowered, other data grown): Redis refuses every write.
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 64 * 1024)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("lb:test:probe", "x")
        assert crm.post(stack.bridge, SECRET, event(*REFS[0], 10_000)).status_code == 503

        start_workers_and_deliver(stack, latest)
        for process in stack.workers:  # an outage is said once, never once per try
            assert stack.log_of(process).count(WENT_AWAY) <= 1, notable(stack.log_of(process))
        assert_workers_kept_running(stack)
    client.close()
