"""The cluster harness (tests/support/cluster.py) does what the cluster tests rely on: six real
nodes form a cluster redis-py's cluster client uses, a killed master's replica takes over, a
slot moves under a writer with no acknowledged write lost, and the AOF outlives a full stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from tests.support.cluster import Cluster, command, redis_cluster
from tests.support.servers import wait_until

pytestmark = [pytest.mark.servers, pytest.mark.timeout(60)]

NODE_TIMEOUT_MS = 1000


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with redis_cluster(node_timeout_ms=NODE_TIMEOUT_MS) as c:
        yield c


def connect(cluster: Cluster) -> RedisCluster:
    client: RedisCluster = RedisCluster.from_url(cluster.url, decode_responses=True)
    return client


async def test_the_cluster_forms_and_serves_hash_tags_from_different_masters(
        cluster: Cluster) -> None:
    assert len(cluster.masters()) == 3
    for master in cluster.masters():
        assert master.role == "master"
        assert [r.role for r in cluster.replicas_of(master)] == ["slave"]
    a, b = cluster.master_of_key("{t:a}"), cluster.master_of_key("{t:b}")
    assert a is not b
    assert cluster.master_of_key("{t:a}:x") is a  # the hash tag decides

    before = {m.port: cluster.commandstats(m).get("set", 0) for m in (a, b)}
    client = connect(cluster)
    try:
        for i in range(20):
            assert await client.set(f"{{t:a}}:{i}", f"a{i}")
            assert await client.set(f"{{t:b}}:{i}", f"b{i}")
        assert [await client.get(f"{{t:a}}:{i}") for i in range(20)] == [
            f"a{i}" for i in range(20)]
        assert [await client.get(f"{{t:b}}:{i}") for i in range(20)] == [
            f"b{i}" for i in range(20)]
    finally:
        await client.aclose()
    assert cluster.commandstats(a)["set"] - before[a.port] == 20
    assert cluster.commandstats(b)["set"] - before[b.port] == 20
    assert a.client().get("{t:a}:3") == "a3"
    assert cluster.info(a, "keyspace")["db0"]["keys"] == 20


async def test_a_killed_master_is_replaced_by_its_replica(cluster: Cluster) -> None:
    client = connect(cluster)
    try:
        for i in range(50):
            await client.set(f"{{t:a}}:{i}", i)
        old = cluster.master_of_key("{t:a}")
        (replica,) = cluster.replicas_of(old)
        cluster.wait_replicated(old)

        started = time.monotonic()
        cluster.kill(old)
        assert (old.alive, old.role) == (False, None)
        new = cluster.wait_failover(old)
        took = time.monotonic() - started
        assert new is replica
        assert took < NODE_TIMEOUT_MS / 1000 + 5, took
        assert cluster.master_of_key("{t:a}") is new and new.role == "master"

        async def writes() -> bool:
            try:
                return bool(await client.set("{t:a}:after", "yes"))
            except (redis.ConnectionError, redis.exceptions.ClusterDownError, redis.TimeoutError):
                return False  # the client may need a try to learn the new map

        deadline = time.monotonic() + 10
        while not await writes():
            assert time.monotonic() < deadline, "writes to the slot did not resume"
            await asyncio.sleep(0.1)
        assert await client.get("{t:a}:after") == "yes"
        assert [await client.get(f"{{t:a}}:{i}") for i in range(50)] == [
            str(i) for i in range(50)]

        cluster.restart(old)  # back as the new master's replica
        assert old.role == "slave"
        assert cluster.replicas_of(new) == [old]
    finally:
        await client.aclose()


async def test_move_slot_under_a_writer_keeps_every_acknowledged_write(
        cluster: Cluster) -> None:
    slot = cluster.slot_of("{t:m}")
    source = cluster.master_of_slot(slot)
    target = next(m for m in cluster.masters() if m is not source)
    client = connect(cluster)
    acked: dict[str, str] = {}
    try:
        for i in range(500):
            key, value = f"{{t:m}}:old:{i}", f"v{i}"
            await client.set(key, value)
            acked[key] = value
        asking_before = cluster.commandstats(target).get("asking", 0)

        done = False
        writes = 0
        moved_at: int | None = None  # the writer's count when the move was over
        after_move = asyncio.Event()

        async def writer() -> None:
            nonlocal writes
            n = 0
            while not done:
                n += 1
                # new keys (ASK to the target mid-move) and overwrites of old ones
                for key in (f"{{t:m}}:new:{n}", f"{{t:m}}:old:{n % 500}"):
                    value = f"w{n}"
                    assert await client.set(key, value)
                    acked[key] = value
                writes += 1
                if moved_at is not None and writes >= moved_at + 20:
                    after_move.set()  # and after the move (MOVED, then the new map)
                await asyncio.sleep(0)

        def between_batches(moved: int) -> None:
            # let the writer act while the slot is half here, half there
            seen = writes
            wait_until(lambda: writes >= seen + 3, timeout=10, what="the writer to go on")

        task = asyncio.create_task(writer())
        try:
            await asyncio.to_thread(cluster.move_slot, slot, target, batch=50,
                                    on_batch=between_batches)
            moved_at = writes
            await asyncio.wait_for(after_move.wait(), timeout=10)
        finally:
            done = True
            await task
    finally:
        await client.aclose()

    assert cluster.master_of_slot(slot) is target
    assert cluster.commandstats(target).get("asking", 0) > asking_before  # ASK was seen
    assert command(source.client(), "CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    check = cluster.client()
    try:
        assert {k: check.get(k) for k in acked} == acked
        assert command(target.client(), "CLUSTER", "COUNTKEYSINSLOT", slot) == len(acked)
    finally:
        check.close()


async def test_stop_all_then_start_all_keeps_the_data(cluster: Cluster) -> None:
    keys = {f"{{t:{i % 7}}}:{i}": str(i) for i in range(200)}
    client = connect(cluster)
    try:
        for key, value in keys.items():
            await client.set(key, value)
    finally:
        await client.aclose()

    cluster.stop_all()
    assert not any(n.alive for n in cluster.nodes)
    probe = redis.Redis.from_url(cluster.url, socket_connect_timeout=1)
    with pytest.raises(redis.ConnectionError):
        probe.ping()
    probe.close()
    cluster.start_all()

    client = connect(cluster)
    try:
        assert {k: await client.get(k) for k in keys} == keys
        assert await client.set("{t:0}:after", "yes")
    finally:
        await client.aclose()
