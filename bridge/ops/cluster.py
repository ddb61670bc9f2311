"""A Redis Cluster's nodes for operators (``/readyz``, the dashboard's Redis panel, ``bridge
status``, ``/metrics``): each node's role, whether it answers, whether the cluster flags it as
failing (a failover may be under way), its memory and AOF, and which configured tenants' slots
it serves (every key of a tenant is in one slot: ``bridge.tenancy``).

The cluster's own view (``CLUSTER NODES`` from any node that answers) says who serves which
slots and who is failing; each node's ``INFO`` says the rest. A node that does not answer is
listed as unreachable with what the cluster says of it.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import RedisError

from bridge import tenancy
from bridge.ops.models import RedisNode
from bridge.replies import maybe_text

INFO_TIMEOUT_S = 2.0


def is_cluster(redis: Redis) -> bool:
    return hasattr(redis, "nodes_manager")


def tenant_slot(tenant: str) -> int:
    return key_slot(tenancy.prefix(tenant).encode())


async def cluster_nodes(redis: Redis, tenants: list[str]) -> list[RedisNode]:
    """Every node of the cluster ``redis`` (a RedisCluster client), masters first."""
    cluster = cast(Any, redis)
    view: dict[str, dict[str, Any]] = await cluster.cluster_nodes()
    slots_of = {tenant: tenant_slot(tenant) for tenant in tenants}
    ids = {info["node_id"]: address for address, info in view.items()}
    nodes = await asyncio.gather(*(_node(cluster, address, info, ids, slots_of)
                                   for address, info in view.items()))
    return sorted(nodes, key=lambda n: (n.role != "master", n.address))


async def _node(cluster: Any, address: str, info: dict[str, Any], ids: dict[str, str],
                slots_of: dict[str, int]) -> RedisNode:
    flags = str(info.get("flags", ""))
    ranges = [(int(r[0]), int(r[-1])) for r in info.get("slots", []) if r]
    served = [t for t, slot in slots_of.items() if any(a <= slot <= b for a, b in ranges)]
    master = ids.get(str(info.get("master_id", "-")))
    reading = await _info(cluster, address)
    return RedisNode(
        address=address.split("@")[0], role="master" if "master" in flags else "replica",
        reachable=reading is not None, failing="fail" in flags,
        slots=sum(b - a + 1 for a, b in ranges), tenants=sorted(served),
        master=master.split("@")[0] if master else None,
        used_memory_human=_text(reading, "used_memory_human"),
        maxmemory=_int(reading, "maxmemory"), aof_enabled=_int(reading, "aof_enabled"),
        aof_last_write_status=_text(reading, "aof_last_write_status"))


async def _info(cluster: Any, address: str) -> dict[str, Any] | None:
    """The node's INFO memory and persistence; None when it does not answer."""
    host, _, port = address.split("@")[0].rpartition(":")
    node = cluster.get_node(host=host, port=int(port))
    if node is None:
        return None
    try:
        async with asyncio.timeout(INFO_TIMEOUT_S):
            memory = await cluster.info("memory", target_nodes=node)
            persistence = await cluster.info("persistence", target_nodes=node)
    except (RedisError, OSError, TimeoutError):
        return None
    return {**memory, **persistence}


def _text(info: dict[str, Any] | None, name: str) -> str | None:
    return None if info is None else maybe_text(info.get(name))


def _int(info: dict[str, Any] | None, name: str) -> int | None:
    value = None if info is None else info.get(name)
    return None if value is None else int(value)
