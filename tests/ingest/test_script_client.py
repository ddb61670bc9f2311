"""The webhook's pipelined script client (bridge.ingest.script_client.ScriptBatcher) against the
test Redis: ordering, the NOSCRIPT path, script errors, a server that goes away, and a port where
nothing listens."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bridge.ingest.script_client import ScriptBatcher
from tests.ingest.calls import SCRIPT, Calls
from tests.support.servers import RedisServer, free_port

SHA = hashlib.sha1(SCRIPT.source.encode()).hexdigest()


@pytest.fixture
async def batcher(redis_url: str) -> AsyncIterator[ScriptBatcher]:
    client = Calls(redis_url, SCRIPT, timeout_s=5.0)
    yield client
    await client.aclose()


@pytest.fixture
def running_redis(redis_srv: RedisServer) -> Iterator[RedisServer]:
    """The session's server for a test that stops it: running again afterwards, whatever
    happened, so later tests find it."""
    yield redis_srv
    if redis_srv.process is None or redis_srv.process.poll() is not None:
        redis_srv.start()


def reads_processed(r: redis.Redis) -> int:
    return int(cast(dict[str, Any], r.info("stats"))["total_reads_processed"])


def connections_received(r: redis.Redis) -> int:
    return int(cast(dict[str, Any], r.info("stats"))["total_connections_received"])


async def test_concurrent_calls_run_in_order_and_each_gets_its_own_reply(
    batcher: ScriptBatcher, r: redis.Redis,
) -> None:
    # The first calls go out before a connection exists; the later ones on a live connection.
    first = [batcher.call([f"a{i}"]) for i in range(200)]
    replies = await asyncio.gather(*first)
    replies += await asyncio.gather(*(batcher.call([f"b{i}"]) for i in range(300)))
    sent = [f"a{i}" for i in range(200)] + [f"b{i}" for i in range(300)]
    assert replies == [[arg.encode(), n] for n, arg in enumerate(sent, start=1)]
    assert r.lrange("lb:test:calls", 0, -1) == sent


async def test_calls_made_in_one_loop_turn_share_one_socket_write(
    batcher: ScriptBatcher, r: redis.Redis,
) -> None:
    assert await batcher.call(["warm"]) == [b"warm", 1]  # connected, script loaded
    before = reads_processed(r)
    replies = await asyncio.gather(*(batcher.call([f"c{i}"]) for i in range(200)))
    assert replies == [[f"c{i}".encode(), i + 2] for i in range(200)]
    # One write of ~30 KB: Redis takes it in a read or two, not one per call (+1: the INFO).
    assert reads_processed(r) - before <= 5


async def test_calls_redis_holds_past_the_deadline_fail_with_timeout_and_the_next_reconnects(
    redis_url: str, r: redis.Redis,
) -> None:
    client = Calls(redis_url, SCRIPT, timeout_s=0.5)
    try:
        assert await client.call(["warm"]) == [b"warm", 1]
        connections = connections_received(r)
        r.client_pause(1500, all=False)  # scripts wait; INFO still answers
        started = time.monotonic()
        first = [asyncio.ensure_future(client.call([f"t{i}"])) for i in range(5)]
        await asyncio.sleep(0.1)  # a later loop turn: its own deadline
        later = [asyncio.ensure_future(client.call([f"u{i}"])) for i in range(5)]
        results = await asyncio.gather(*first, *later, return_exceptions=True)
        assert all(isinstance(result, TimeoutError) for result in results), results
        assert 0.45 < time.monotonic() - started < 1.2
        r.client_unpause()
        # A new connection; the calls Redis held went with the old one, never run.
        assert await client.call(["after"]) == [b"after", 2]
        assert connections_received(r) == connections + 1
    finally:
        await client.aclose()


async def test_after_script_flush_the_next_call_loads_the_script_again(
    batcher: ScriptBatcher, r: redis.Redis,
) -> None:
    assert await batcher.call(["one"]) == [b"one", 1]
    r.script_flush()
    assert r.script_exists(SHA) == [False]
    assert await batcher.call(["two"]) == [b"two", 2]  # NOSCRIPT: loaded, then run once
    assert r.script_exists(SHA) == [True]
    assert r.lrange("lb:test:calls", 0, -1) == ["one", "two"]


async def test_a_script_error_reaches_its_caller_and_the_connection_stays_usable(
    batcher: ScriptBatcher, r: redis.Redis,
) -> None:
    assert await batcher.call(["before"]) == [b"before", 1]
    connections = connections_received(r)
    with pytest.raises(ResponseError, match="boom"):
        await batcher.call(["boom"])
    # Calls pipelined around a failing one keep their own replies.
    around = await asyncio.gather(batcher.call(["x"]), batcher.call(["boom"]),
                                  batcher.call(["y"]), return_exceptions=True)
    assert around[0] == [b"x", 2] and around[2] == [b"y", 3]
    assert isinstance(around[1], ResponseError)
    assert await batcher.call(["after"]) == [b"after", 4]
    assert connections_received(r) == connections  # no reconnect was needed


@pytest.mark.servers
async def test_stopping_the_server_fails_every_call_in_flight_and_a_restart_recovers(
    batcher: ScriptBatcher, running_redis: RedisServer, r: redis.Redis,
) -> None:
    assert await batcher.call(["warm"]) == [b"warm", 1]  # connected, script loaded
    # Paused clients: the next calls are sent but get no answer before the server goes.
    r.client_pause(30_000, all=True)
    in_flight = [asyncio.ensure_future(batcher.call([f"c{i}"])) for i in range(50)]
    await asyncio.sleep(0)  # let each task write its call
    assert not any(task.done() for task in in_flight)

    running_redis.stop(kill=True)
    results = await asyncio.gather(*in_flight, return_exceptions=True)
    assert all(isinstance(result, RedisConnectionError) for result in results), results

    with pytest.raises(RedisConnectionError):  # nothing listens: fails, does not hang
        await batcher.call(["down"])

    running_redis.start()
    # A new connection; the restarted server forgot the script (NOSCRIPT) but kept the data.
    assert await batcher.call(["back"]) == [b"back", 2]


async def test_a_connect_to_a_closed_port_fails_fast() -> None:
    client = Calls(f"redis://127.0.0.1:{free_port()}/0", SCRIPT, connect_timeout_s=2.0)
    started = time.monotonic()
    try:
        with pytest.raises(RedisConnectionError, match="cannot connect"):
            await client.call(["x"])
    finally:
        await client.aclose()
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("url", ["http://127.0.0.1:6380/0", "valkeys://127.0.0.1:6380/0",
                                 "127.0.0.1:6379"])
def test_only_redis_rediss_and_unix_urls_are_accepted(url: str) -> None:
    # rediss:// (TLS) is accepted since the client speaks TLS: test_script_client_connections.
    with pytest.raises(ValueError, match=r"redis://, rediss:// or unix://"):
        Calls(url, SCRIPT)
