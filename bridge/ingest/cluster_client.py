"""The webhook's script on a Redis Cluster: one ``ScriptBatcher`` per master, each call sent to
the master that owns its keys' slot (every key of a tenant shares one, ``lb:{t:NAME}:``).

So the webhook's durable write and the ``WAITAOF``/``WAIT`` covering it run on the node that
owns the tenant's slot, on one connection, exactly as on a single Redis (``script_client.py``):
a 202 means what it always meant. The slot map is redis-py's (``RedisCluster``'s nodes
manager). A reply that says the slot is elsewhere or moving (``MOVED``, ``ASK``, ``TRYAGAIN``,
``CLUSTERDOWN``), or a master that cannot be reached (killed, failing over), makes the call
read the map again and try again until its deadline; the script is safe to repeat (its dedupe
marker), and an ``ASK`` is simply waited out: a slot migration of one tenant's keys ends in
moments with a ``MOVED``. Past the deadline the webhook answers 503 and the CRM retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.connections import Durability
from bridge.ingest.script_client import ScriptBatcher, StorageUnavailable
from bridge.scripts import Lua

log = logging.getLogger("bridge.ingest.cluster_client")

# Replies that mean: the slot is served elsewhere, or not yet; ask the map again.
REROUTE = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")
# How long a call keeps trying through a failover or a slot move, and its first pause.
DEADLINE_S = 5.0
FIRST_PAUSE_S = 0.05

Prepare = Callable[[], Awaitable[Durability]]
NodeCheck = Callable[[Redis], Prepare]


class ClusterScripts:
    """``call_packed`` routed by slot over one batcher per master."""

    def __init__(self, cluster: RedisCluster, node_url: Callable[[str, int], str], script: Lua,
                 check: NodeCheck, node_client: Callable[[str], Redis], keys: int,
                 deadline_s: float = DEADLINE_S) -> None:
        """``node_url(host, port)``: the URL of a node, with the seed's credentials and
        options; ``check(client)``: the start-up check of one node, run by its batcher on
        every connect (``bridge.connections.RedisCheck``)."""
        self.cluster = cluster
        self._node_url = node_url
        self._script = script
        self._check = check
        self._node_client = node_client
        self._deadline_s = deadline_s
        self._keys = keys
        self._batchers: dict[str, tuple[ScriptBatcher, Redis]] = {}

    async def call_packed(self, count: int, bulks: bytes, slot: int) -> Any:
        deadline = time.monotonic() + self._deadline_s
        pause = FIRST_PAUSE_S
        while True:
            try:
                batcher = await self._batcher(slot)
                return await batcher.call_packed(count, bulks)
            except ResponseError as exc:
                if not str(exc).startswith(REROUTE):
                    raise
                failure: Exception = exc
            except (StorageUnavailable, RedisConnectionError, RedisTimeoutError, OSError,
                    SlotNotCoveredError) as exc:
                failure = exc  # a master gone: its replica takes over within the node timeout
            if time.monotonic() + pause > deadline:
                raise StorageUnavailable(f"the cluster did not serve slot {slot} within "
                                         f"{self._deadline_s:g} s: {failure}") from failure
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)
            await self._refresh()

    async def _batcher(self, slot: int) -> ScriptBatcher:
        if not self.cluster.nodes_manager.slots_cache:
            await self.cluster.initialize()
        node = self.cluster.nodes_manager.get_node_from_slot(slot)
        known = self._batchers.get(node.name)
        if known is None:
            url = self._node_url(node.host, int(node.port))
            client = self._node_client(url)
            batcher = ScriptBatcher(url, self._script, prepare=self._check(client),
                                    keys=self._keys)
            known = self._batchers[node.name] = (batcher, client)
        return known[0]

    async def _refresh(self) -> None:
        """Read the slot map again (a failover or a move changed it)."""
        try:
            await self.cluster.nodes_manager.initialize()
        except Exception as exc:  # the next try says what is wrong, if it still is
            log.debug("reading the cluster's slot map failed: %s", exc)

    async def aclose(self) -> None:
        for batcher, client in self._batchers.values():
            await batcher.aclose()
            await client.aclose()
        self._batchers.clear()
