"""Workers notice a Redis that stops answering without closing its connections: the session's
real Redis frozen with SIGSTOP under them (a hung server, or a network path that dropped the
connections, looks the same from here), then thawed."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from arq.worker import Worker

from bridge.connections import redis_client
from tests.conftest import make_settings
from tests.support import keyaudit
from tests.support.servers import RedisServer
from tests.support.stack import running_stack
from tests.workers.test_redis_outage import (
    CAME_BACK,
    RECOVERY_S,
    WENT_AWAY,
    delivered,
    notable,
    post_until_accepted,
    started,
    stop_and_read,
    until,
    upsert,
)
from workers.worker import RETIRE_S, STALL_S, WATCH_EVERY_S, Supervisor

STALLED = "RedisStalled: no answer to PING within"
# The longest a worker takes to notice: the wait for its next ping and the ping's deadline, with
# room for a loaded machine (it says so once the frozen worker is released, thawed or not).
NOTICED_S = WATCH_EVERY_S + STALL_S + 3


@pytest.fixture
def frozen(redis_srv: RedisServer) -> Iterator[Callable[[bool], None]]:
    """``frozen(True)`` stops the session's Redis process, ``frozen(False)`` resumes it;
    whatever a test does, the next one finds it running."""
    assert redis_srv.process is not None
    pid = redis_srv.process.pid

    def freeze(on: bool) -> None:
        os.kill(pid, signal.SIGSTOP if on else signal.SIGCONT)

    try:
        yield freeze
    finally:
        freeze(False)


@pytest.mark.servers  # freezes the session's server (SIGSTOP)
def test_a_frozen_redis_is_an_outage_said_once_and_a_fresh_worker_starts_once_it_answers(
    frozen: Callable[[bool], None], redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """In-process, with a ping every 0.2 s and a 1 s deadline: the frozen worker is released
    completely (its tasks, its connections), and the next one runs once Redis answers."""
    settings = make_settings(redis_url)
    caplog.set_level(logging.INFO, logger="workers.worker")

    async def scenario() -> None:
        supervisor = Supervisor(settings, stall_s=1.0, watch_every_s=0.2)
        running = asyncio.create_task(supervisor.run())
        await until(lambda: started(supervisor), "the first worker")
        tasks = len(asyncio.all_tasks())
        assert supervisor.worker is not None
        first: weakref.ref[Worker] = weakref.ref(supervisor.worker)
        frozen(True)
        try:
            await until(lambda: supervisor.redis_down and supervisor.worker is None,
                        "the stall to be noticed and the frozen worker released",
                        within=0.2 + 1.0 + RETIRE_S + 10)
        finally:
            frozen(False)
        await until(lambda: not supervisor.redis_down and started(supervisor), "a fresh worker")
        assert supervisor.worker is not None and supervisor.worker is not first()
        # A fresh worker starts a short-lived task or two (its first poll, a heartbeat) around
        # the instant it counts as started: wait, with a deadline, for the steady count; a task
        # the frozen worker left behind would keep it above the first worker's.
        await until(lambda: len(asyncio.all_tasks()) <= tasks,
                    f"no more than the first worker's {tasks} tasks")
        supervisor.stop(signal.SIGTERM)
        await running
        gc.collect()
        assert first() is None

    asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records if r.name == "workers.worker"]
    assert [line for line in said if WENT_AWAY in line] == [
        next(line for line in said if STALLED in line)], said
    assert sum(CAME_BACK in line for line in said) == 1, said
    client = redis.Redis.from_url(redis_url)
    # Only this client is left: the frozen worker's pool, and the supervisor's probe, were closed.
    ours = [c for c in client.client_list()  # type: ignore[union-attr]
            if c["name"] != keyaudit.NAME.decode()]  # the session's key audit
    assert len(ours) == 1
    client.close()


def test_a_ping_held_up_by_the_workers_own_blocked_loop_is_not_a_stall(redis_url: str) -> None:
    """A long synchronous step (a flush planning a large group) blocks the worker's event loop
    past the stall deadline while the supervisor's ping is on its way (here: still connecting):
    Redis answered in time as far as it is concerned, so no stall is declared (else a large
    group's flush would be cut off and restarted, again and again)."""
    supervisor = Supervisor(make_settings(redis_url), stall_s=1.0)

    async def scenario() -> None:
        probe = redis_client(redis_url, socket_timeout=None)
        try:
            ping = asyncio.create_task(supervisor._ping(probe))
            await asyncio.sleep(0)  # the ping starts: a new client connects first
            time.sleep(1.5)  # noqa: ASYNC251  # the blocking step, past the 1 s deadline
            await ping  # answered: no RedisStalled
        finally:
            await probe.aclose()

    asyncio.run(scenario())


@pytest.mark.processes
def test_a_worker_process_says_when_redis_stops_answering_and_delivers_once_it_does(
    frozen: Callable[[bool], None], redis_url: str, tmp_path: Path
) -> None:
    """A real ``bridge worker`` with the default deadline, Redis frozen while a flush is under
    way (a slow sync holds it) for longer than the worker takes to notice (the scenario's
    length, not a wait for something), then thawed: every final state reaches both portals."""
    with running_stack(redis_url, tmp_path, workers=1) as stack:
        post_until_accepted(stack, upsert("stall", "stall-apt-1", 1))
        stack.wait(lambda: delivered(stack, {("stall", "stall-apt-1"): 1}), timeout=RECOVERY_S,
                   what="delivery before the freeze")
        slow = {"portal": "travtus", "path": "/listing/sync", "latency_ms": 1500, "count": 1}
        assert stack.sandbox.post("/_sandbox/faults", json=slow).status_code in (200, 201)
        post_until_accepted(stack, upsert("stall", "stall-apt-1", 2))
        client = redis.Redis.from_url(redis_url)
        stack.wait(lambda: client.keys("arq:in-progress:*"), what="a flush under way")
        client.close()
        frozen(True)
        try:
            time.sleep(NOTICED_S)
        finally:
            frozen(False)
        post_until_accepted(stack, upsert("stall", "stall-apt-2", 1))
        latest = {("stall", "stall-apt-1"): 2, ("stall", "stall-apt-2"): 1}
        stack.wait(lambda: delivered(stack, latest), timeout=RECOVERY_S,
                   what="every final state after the thaw")
        assert stack.workers[0].poll() is None
        [(code, log)] = stop_and_read(stack)
        assert code == 0, notable(log)
        assert log.count(WENT_AWAY) == 1 and STALLED in log, notable(log)
        assert log.count(CAME_BACK) == 1, notable(log)
