"""Workers ride out a Redis outage: real ``bridge worker`` processes, the session's real Redis
stopped and started under them, the sandbox portals as witnesses."""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from arq.worker import Worker

from tests.conftest import SECRET, make_settings
from tests.support import crm, keyaudit
from tests.support.servers import RedisServer, wait_until
from tests.support.stack import Stack, running_stack
from workers.worker import Supervisor

OUTAGE_S = 2.0
# The supervisor's one line each way (workers/worker.py).
WENT_AWAY = "delivery paused until it answers"
CAME_BACK = "is back; worker resuming"
# arq alone retries a refused connection 5 times, 1 s apart, then the process exits.
ARQ_GIVES_UP_S = 6.0
# A flush cut off mid-way runs again once its lease, or arq's in-progress marker, runs out
# (seconds past the 5 s job timeout of the stack's settings).
RECOVERY_S = 45.0


@pytest.fixture
def redis_back(redis_srv: RedisServer) -> Iterator[RedisServer]:
    """Whatever a test does to Redis, the next test finds it running."""
    try:
        yield redis_srv
    finally:
        if redis_srv.process is None:
            redis_srv.start()


def upsert(group: str, ref: str, version: int) -> dict[str, Any]:
    # The price carries the version, so a portal's copy shows which version it has.
    return crm.upsert(group, ref, version,
                      price={"amount": 1000 + version, "currency": "EUR", "period": "monthly"})


def post_until_accepted(stack: Stack, payload: dict[str, Any], timeout: float = 15) -> None:
    """Post like the CRM does: the same message again after a 503, until it is stored."""
    msg_id = f"msg_{uuid.uuid4().hex}"

    def accepted() -> bool:
        try:
            response = crm.post(stack.bridge, SECRET, payload, msg_id)
        except httpx.TransportError:
            return False
        assert response.status_code in (200, 202, 503), response.text
        return response.status_code != 503

    wait_until(accepted, timeout=timeout, what="the webhook to accept the event")


def delivered(stack: Stack, latest: dict[tuple[str, str], int]) -> bool:
    """Every listing's latest version is what both portals show."""
    rentix = stack.rentix_listings()
    for (group, ref), version in latest.items():
        amount = 1000 + version
        copy = rentix.get(ref)
        if copy is None or copy["formData"]["announcementValue"] != amount:
            return False
        synced = stack.travtus_listings(group).get(ref)
        if synced is None or synced["lease_terms"][0]["rent"] != amount:
            return False
    return True


def stop_and_read(stack: Stack) -> list[tuple[int | None, str]]:
    """SIGTERM every worker; their exit codes and everything they logged."""
    stack.stop_workers()
    return [(process.returncode, stack.log_of(process)) for process in stack.workers]


def notable(log: str) -> str:
    """A worker's log without the routine lines (each job, each portal request)."""
    return "\n".join(line for line in log.splitlines()
                     if not line.endswith('"HTTP/1.1 200 OK"') and " → " not in line
                     and " ← " not in line)


def assert_outage_logged_once(log: str) -> None:
    assert log.count(WENT_AWAY) == 1, [line for line in log.splitlines() if WENT_AWAY in line]
    assert log.count(CAME_BACK) == 1, notable(log)
    # At most one per flush cut off mid-way (the delivery code logs those, three groups here)
    # and one for arq's own bookkeeping of a job it was finishing when Redis went (its task's
    # error is logged by asyncio), never one per poll.
    errors = [line for line in log.splitlines() if " ERROR " in line]
    cut_off = sum(line.endswith(" failed") for line in errors)
    assert cut_off <= 3 and len(errors) <= cut_off + 1, notable(log)


@pytest.mark.processes
def test_two_workers_ride_out_a_redis_restart_and_deliver_every_final_state(
    redis_back: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    groups = [f"outage-{n}" for n in range(3)]
    refs = {group: [f"{group}-apt-{i}" for i in range(2)] for group in groups}
    latest: dict[tuple[str, str], int] = {}

    def post_round(version: int) -> None:
        for group in groups:
            for ref in refs[group]:
                post_until_accepted(stack, upsert(group, ref, version))
                latest[group, ref] = version

    with running_stack(redis_url, tmp_path, workers=2) as stack:
        # Slow syncs keep flushes running, so the outage cuts some off mid-way.
        slow = {"portal": "travtus", "path": "/listing/sync", "latency_ms": 300}
        assert stack.sandbox.post("/_sandbox/faults", json=slow).status_code in (200, 201)
        post_round(1)
        stack.wait(lambda: delivered(stack, latest), timeout=RECOVERY_S, what="round 1")
        post_round(2)
        client = redis.Redis.from_url(redis_url)
        stack.wait(lambda: client.keys("arq:in-progress:*"), what="a flush under way")
        client.close()

        redis_back.stop()
        down_until = time.monotonic() + OUTAGE_S
        while time.monotonic() < down_until:  # the webhook refuses, the workers wait
            response = crm.post(stack.bridge, SECRET, upsert(groups[0], refs[groups[0]][0], 3))
            assert response.status_code == 503
            time.sleep(0.2)
        redis_back.start()

        post_round(3)  # the 503s above are retried by the CRM: round 3 carries them
        post_round(4)
        stack.wait(lambda: delivered(stack, latest), timeout=RECOVERY_S, what="every final state")
        alive = [process.poll() is None for process in stack.workers]
        logs = stop_and_read(stack)
        assert alive == [True, True], [notable(log) for _, log in logs]
        for code, log in logs:
            assert code == 0, notable(log)
            assert_outage_logged_once(log)


@pytest.mark.processes
def test_a_worker_started_while_redis_is_down_delivers_once_it_is_up(
    redis_back: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path, workers=0) as stack:
        post_until_accepted(stack, upsert("late", "late-apt-1", 1))
        redis_back.stop()
        worker = stack.start_worker()
        with pytest.raises(subprocess.TimeoutExpired):  # it waits instead of exiting
            worker.wait(timeout=ARQ_GIVES_UP_S)
        redis_back.start()
        stack.wait(lambda: delivered(stack, {("late", "late-apt-1"): 1}), timeout=RECOVERY_S,
                   what="delivery once Redis is up")
        assert worker.poll() is None
        [(code, log)] = stop_and_read(stack)
        assert code == 0, log
        assert_outage_logged_once(log)
        assert "Traceback" not in log, log


async def until(predicate: Callable[[], object], what: str, within: float = 20) -> None:
    """In a test's own event loop: wait for ``predicate``, at most ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def started(supervisor: Supervisor) -> bool:
    """The supervisor's current worker ran its startup: its scheduler and heartbeat exist."""
    return supervisor.worker is not None and "tasks" in supervisor.worker.ctx


@pytest.mark.servers
def test_repeated_outages_leave_no_workers_tasks_or_connections_behind(
    redis_back: RedisServer, redis_url: str
) -> None:
    """In-process, against the real Redis: each outage retires the arq worker completely."""
    settings = make_settings(redis_url)

    async def scenario() -> None:
        supervisor = Supervisor(settings)
        running = asyncio.create_task(supervisor.run())
        await until(lambda: started(supervisor), "the first worker")
        tasks = len(asyncio.all_tasks())
        retired: list[weakref.ref[Worker]] = []
        for _ in range(3):
            assert supervisor.worker is not None
            retired.append(weakref.ref(supervisor.worker))
            await asyncio.to_thread(redis_back.stop)
            await until(lambda: supervisor.redis_down, "the outage to be noticed")
            await asyncio.to_thread(redis_back.start)
            await until(lambda: not supervisor.redis_down and started(supervisor),
                        "a fresh worker")
            # The fresh worker's startup may still run a task of its own for a moment (as the
            # first may have when counted): what must not stay is a retired worker's, which
            # would add up over the outages.
            await until(lambda: len(asyncio.all_tasks()) <= tasks,
                        f"no more than the first worker's {tasks} tasks")
        supervisor.stop(signal.SIGTERM)
        await running
        gc.collect()
        assert [ref() for ref in retired] == [None, None, None]

    asyncio.run(scenario())
    client = redis.Redis.from_url(redis_url)
    # Only this client is left: every worker's pool, and the supervisor's probe, was closed.
    ours = [c for c in client.client_list()  # type: ignore[union-attr]
            if c["name"] != keyaudit.NAME.decode()]  # the session's key audit
    assert len(ours) == 1
    client.close()
