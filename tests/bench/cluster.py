"""Redis Cluster (issue 32, part 4): how evenly 30 equally busy tenants load a 3-master cluster,
and what the cluster costs in Redis CPU per event against one node.

    python -m tests.bench.cluster [--tenants 30] [--seconds 60] [--rate 150] [--workers 2]
                                  [--masters 3] [--replicas 1] [--phases PHASE,...]
                                  [--single-jobs same|apart] [--syscalls] [--logs DIR]

One ``bridge sandbox`` per tenant (its own Rentix API key and Travtus client: each agency owns
its rate budgets, so the credentials' rate buckets, ``lb:{r:ID}:ratelimit``, are slots of their
own, not one shared hot key), limits far above the load, started once for the run. Each phase
starts ``bridge serve`` and ``bridge worker`` x ``--workers`` on its Redis, reads every Redis
``--idle-s`` apart with no event (the idle rate), then posts the same steady stream (``--rate``
events/s for ``--seconds``, spread evenly over the tenants: event n to tenant n mod T, each
tenant's in order on one keep-alive connection; creates then edits of ``--groups`` x
``--per-group`` listings per tenant, bridge.dev.generate, each with a price of its own) to
``/webhooks/crm/{tenant}``, signed; waits until every tenant's inbox is folded and nothing is
due, flushing or waiting in an outbox, and checks with each tenant's sandbox that both portals
hold every listing's final version. The window's readings of every Redis (``INFO
commandstats``: calls of every command, scripts' inner commands included; ``INFO cpu``:
used_cpu_sys + used_cpu_user; /proc/PID/schedstat: how often the process was woken) run from
just before the first post to the check that everything was delivered: CPU per event is over
the events stored (202), all of them folded and delivered, the settle's idle tail included
(printed apart: the idle rate over the window).

Phases (``--phases``, in this order; the server is the cluster harness's, ``LB_CLUSTER_SERVER``,
redis-server on PATH by default, every node with tests/support/cluster.py's settings:
``appendfsync always``, AOF, noeviction):

- single: one ``redis-server`` with the cluster nodes' settings but the cluster's own, and
  ``--replicas`` replicas of it, ``[redis] cluster = false``. arq's queue is on that node
  (``--single-jobs same``, the default): with ``jobs_url`` set and ``cluster = false`` the
  worker reads the state from jobs_url (workers/worker.py ``startup``), so nothing would be
  folded; ``--single-jobs apart`` puts it on a Redis of its own once that works.
- one-master: a cluster of one master holding every slot (made by hand: redis-cli wants three
  masters) and its replicas: the bridge's cluster code and the server's cluster mode with the
  load on one node; arq's queue on a Redis of its own (``jobs_url``) as on every cluster.
- hashed: a fresh cluster (tests.support.cluster: ``--masters`` masters, ``--replicas`` each,
  slots as ``redis-cli --cluster create`` spreads them), tenants where their names hash. Its
  masters' CPU per event against single's is the cost figure (aim: at most 1.15x), printed for
  the state alone (single's less what hashed's jobs Redis spent: an estimate) and for the whole
  deployment (queue included on both sides); each master's share of the commands against its
  fair share (1/masters) is the balance figure (aim: none above 1.5x), with what the hashing
  gives in general (tenants dropped uniformly on the masters, loads as fitted on this phase).
- rebalanced: ``redis-cli --cluster rebalance`` as operators run it: as it is (it evens slot
  counts, which ``create`` made even already), then with ``--cluster-weight`` set from hashed's
  loads (a master's weight: its fair share over its measured share), which moves ranges of
  slots and whichever tenants they hold; measured again if it moved any tenant.
- partitioned: a fixed partition of tenants: the fewest tenants' slots moved
  (``Cluster.move_slot``) so that the masters' predicted loads are even, the prediction fitted
  on hashed (commands per tenant, and the extra of the master holding the deployment's keys,
  ``lb:wake`` and ``lb:workers``); measured again.

single and one-master start on fresh sandboxes, hashed too; the cluster phases share one
cluster (the state carries over; each phase's versions are newer). Printed per phase: events
posted, stored (the 202s) and the bridge's own count, how long after the last post everything
was delivered; per master its tenants and slots, its share of commands and of CPU, its busiest
commands; the masters' CPU per event (sys, user, the idle rate's share), the replicas' (apart),
the jobs Redis's, the bridge processes' (/proc); commands and wake-ups per event;
``--syscalls``: the masters' system calls per event while posting (``strace -c``, which slows
them: that run's CPU figures are not the figures). Then the cost lines (single against hashed,
PASS/FAIL; and, as diagnosis, single against one-master, one-master against hashed) and the
balance line per cluster phase. ``--logs DIR`` keeps the processes' logs and configurations.

What it showed on a shared 2-core VM (2026-12-07, Redis 7.0.15): docs/performance.md, "Redis
Cluster": every phase delivered everything; the hashed cluster's busiest master 1.11x its fair
share (30 tenants: above 1.5x in ~10 % of deployments by chance; a partition of one slot move
made it 1.02x; ``redis-cli --cluster rebalance`` moved slot ranges blind to tenants); the cluster
1.47x one node's Redis CPU per event (aim 1.15x), from three event loops each woken as often for
a third of the commands, not from the cluster mode (one master in cluster mode: ~1.0x).

Run by hand, not by the test suite (no ``test_`` prefix: pytest does not collect it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import random
import re
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from bridge import constants as k
from bridge import counters
from bridge.constants import keyspace
from bridge.dev.embedded import free_port
from bridge.dev.generate import event_stream
from bridge.dev.sender import SendReport, signed_request
from tests.bench.harness import (
    BRIDGE,
    DEBOUNCE,
    DELIVERY,
    _Connection,
    distinct_prices,
    final_state,
    groups_of,
    rentix_behind,
    travtus_behind,
)
from tests.bench.scale import revision
from tests.bench.webhook import cpu_seconds, scheduled, up
from tests.conftest import SECRET
from tests.support.cluster import (
    HOST,
    Cluster,
    Node,
    _free_ports,
    _node_args,
    cli_binary,
    command,
    redis_cluster,
    server_binary,
)
from tests.support.redis_servers import version
from tests.support.servers import redis_server, wait_until

PHASES = ("single", "one-master", "hashed", "rebalanced", "partitioned")
BALANCE_AIM = 1.5  # no master above this many times its fair share of commands
COST_AIM = 1.15  # the masters' CPU per event at most this many times one node's
SANDBOX_LIMITS = {"rentix_per_minute": 10_000_000, "rentix_bulk_per_minute": 1_000_000}
VERSIONS = 1_000_000  # each phase's versions start this far above the last's
PRICES = 100_000  # and its prices
# Keys of no tenant: the schedulers' wake set and the supervisors' heartbeat (bridge/constants).
DEPLOYMENT_KEYS = (k.WAKE, k.WORKERS)


def tenant_names(count: int) -> list[str]:
    return [f"agency-{n:02d}" for n in range(count)]


# -- the sandboxes: one per tenant, on credentials of its own --------------------------------------

def sandbox_args(tenant: str, port: int) -> list[str]:
    return ["sandbox", "--port", str(port), "--rentix-api-key", f"{tenant}-rentix-key",
            "--travtus-client-id", f"{tenant}-travtus",
            "--travtus-client-secret", f"{tenant}-secret"]


def tenant_targets(tenant: str, sandbox_url: str) -> list[dict[str, Any]]:
    """The two targets (as tests/bench/scale.py: limits far above the load, so delivery is
    never waiting on a budget) on the tenant's own sandbox and credentials."""
    return [
        {"name": "rentix", "kind": "rentix", "base_url": f"{sandbox_url}/rentix/api/v1",
         "api_key": f"{tenant}-rentix-key", "requests_per_minute": 28_000,
         "bulk_per_minute": 2_800, "bulk_after_s": 0.05},
        {"name": "travtus", "kind": "travtus", "base_url": f"{sandbox_url}/travtus",
         "token_url": f"{sandbox_url}/travtus/oauth2/token", "client_id": f"{tenant}-travtus",
         "client_secret": f"{tenant}-secret", "requests_per_minute": 60_000},
    ]


class Processes:
    """``bridge`` processes by name, each logging to ``logs/NAME.log``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:  # the child keeps its own handle
            proc = subprocess.Popen([*BRIDGE, *args], stdout=subprocess.DEVNULL, stderr=log)
        self.procs[name] = proc
        return proc

    def stop(self, names: Sequence[str] | None = None) -> None:
        chosen = list(self.procs) if names is None else [n for n in names if n in self.procs]
        for name in chosen:
            self.procs[name].terminate()
        for name in chosen:
            proc = self.procs.pop(name)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def tails(self, lines: int = 15) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out += [f"--- {path.name}", *tail] if tail else []
        return "\n".join(out)


@dataclass
class Sandboxes:
    urls: dict[str, str]  # tenant -> base URL
    clients: dict[str, httpx.Client]

    def reset(self) -> None:
        """Forget every listing and the journal; the limits again (a reset restores the
        process's own)."""
        for client in self.clients.values():
            client.post("/_sandbox/reset").raise_for_status()
            client.post("/_sandbox/rate-limits", json=SANDBOX_LIMITS).raise_for_status()


@contextlib.contextmanager
def sandboxes(tenants: Sequence[str], procs: Processes) -> Iterator[Sandboxes]:
    urls = {}
    for tenant in tenants:
        port = free_port()
        procs.start(f"sandbox-{tenant}", sandbox_args(tenant, port))
        urls[tenant] = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        clients = {}
        for tenant, url in urls.items():
            wait_until(functools.partial(up, f"{url}/_sandbox/rate-limits"), timeout=120,
                       what=f"the sandbox of {tenant}")
            clients[tenant] = stack.enter_context(httpx.Client(base_url=url, timeout=120))
        found = Sandboxes(urls, clients)
        found.reset()
        yield found


# -- the bridge on one Redis or one cluster --------------------------------------------------------

def bridge_toml(state_url: str, cluster: bool, jobs_url: str, sandbox_urls: dict[str, str]
                ) -> str:
    lines = [f"redis_url = {json.dumps(state_url)}", "[redis]",
             f"cluster = {json.dumps(cluster)}", f"jobs_url = {json.dumps(jobs_url)}"]
    for name, values in {"debounce": DEBOUNCE, "delivery": DELIVERY}.items():
        lines += [f"[{name}]", *(f"{key} = {json.dumps(v)}" for key, v in values.items())]
    for tenant, url in sandbox_urls.items():
        lines += ["", "[[tenants]]", f"name = {json.dumps(tenant)}",
                  f"webhook_secrets = {json.dumps([SECRET])}"]
        for target in tenant_targets(tenant, url):
            lines.append("[[tenants.targets]]")
            lines += [f"{key} = {json.dumps(v)}" for key, v in target.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Bridge:
    web_url: str
    pids: dict[str, int]  # serve, worker0, ...


@contextlib.contextmanager
def running_bridge(procs: Processes, config: Path, workers: int) -> Iterator[Bridge]:
    port = free_port()
    names = ["serve", *(f"worker{n}" for n in range(workers))]
    pids = {"serve": procs.start("serve", ["serve", "--config", str(config), "--port",
                                           str(port)]).pid}
    for name in names[1:]:
        pids[name] = procs.start(name, ["worker", "--config", str(config)]).pid
    try:
        web = f"http://127.0.0.1:{port}"
        wait_until(lambda: up(f"{web}/readyz", ready=True), timeout=60,
                   what=lambda: f"bridge serve to be ready:\n{procs.tails()}")
        yield Bridge(web, pids)
    finally:
        procs.stop(names)


# -- a plain node with the cluster nodes' settings -------------------------------------------------

def plain_args(port: int, directory: Path, replica_of: int | None = None) -> list[str]:
    """A cluster node's arguments (tests/support/cluster.py) without the cluster's own."""
    args = _node_args(port, 0, directory, 1000, "always")
    kept: list[str] = []
    for name, value in zip(args[::2], args[1::2], strict=True):
        if not name.startswith("--cluster"):
            kept += [name, value]
    return kept + (["--replicaof", HOST, str(replica_of)] if replica_of else [])


@contextlib.contextmanager
def single_node(replicas: int) -> Iterator[tuple[Node, list[Node]]]:
    """One server, and ``replicas`` replicas of it, as the cluster's nodes are run."""
    binary = server_binary()
    with tempfile.TemporaryDirectory(prefix="lb-single-") as d:
        nodes: list[Node] = []
        try:
            for i in range(1 + replicas):
                port, directory = free_port(), Path(d) / f"node{i}"
                directory.mkdir()
                primary = nodes[0].port if nodes else None
                node = Node(port, 0, directory, binary, plain_args(port, directory, primary))
                node.start()
                nodes.append(node)
                wait_until(functools.partial(_answers, node), timeout=20,
                           what=f"redis on port {node.port}")
            master, others = nodes[0], nodes[1:]
            for node in others:
                wait_until(functools.partial(_linked, node), timeout=20,
                           what="the replica's link")
            yield master, others
        finally:
            for node in nodes:
                node.reap()


def _answers(node: Node) -> bool:
    try:
        return bool(node.client().ping())
    except (redis.RedisError, OSError):
        return False


def _linked(replica: Node) -> bool:
    return bool(replica.info("replication").get("master_link_status") == "up")


def _knows(node: Node, other: Node) -> bool:
    return other.node_id in {v.node_id for v in node.views()}


@contextlib.contextmanager
def one_master_cluster(replicas: int) -> Iterator[Cluster]:
    """A Redis Cluster of one master holding every slot (and ``replicas`` replicas): the
    bridge's cluster code and the server's cluster mode on one node. ``redis-cli --cluster
    create`` wants three masters, so it is made by hand: ADDSLOTSRANGE, MEET, REPLICATE."""
    binary = server_binary()
    with tempfile.TemporaryDirectory(prefix="lb-one-master-") as d:
        cluster = Cluster(nodes=[], cli=cli_binary(binary), node_timeout_ms=1000)
        try:
            ports = _free_ports(2 * (1 + replicas))
            for i in range(1 + replicas):
                port, bus, directory = ports[2 * i], ports[2 * i + 1], Path(d) / f"node{i}"
                directory.mkdir()
                node = Node(port, bus, directory, binary,
                            _node_args(port, bus, directory, 1000, "always"))
                node.start()
                node.wait_answering()
                cluster.nodes.append(node)
            master = cluster.nodes[0]
            command(master.client(), "CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            for node in cluster.nodes[1:]:
                command(node.client(), "CLUSTER", "MEET", HOST, master.port, master.bus_port)
            for node in cluster.nodes[1:]:
                wait_until(functools.partial(_knows, node, master), timeout=20,
                           what="the nodes to meet")
                command(node.client(), "CLUSTER", "REPLICATE", master.node_id)
            cluster.wait_healthy(60)
            yield cluster
        finally:
            cluster.close()


# -- the stream ------------------------------------------------------------------------------------

def streams(tenants: Sequence[str], args: argparse.Namespace, phase: int
            ) -> dict[str, list[dict[str, Any]]]:
    """Each tenant's events for phase number ``phase``: newer versions and prices of their own."""
    per_tenant = max(1, round(args.rate * args.seconds / len(tenants)))
    return {tenant: distinct_prices(list(event_stream(
        per_tenant, args.groups, args.per_group, seed=n + 1,
        first_version=1 + phase * VERSIONS)), base=300 + phase * PRICES)
        for n, tenant in enumerate(tenants)}


async def _post_spread(web_url: str, bodies: dict[str, list[bytes]], rate: float
                       ) -> SendReport:
    """Event n of the whole stream (tenant n mod T) is due at n / rate; each tenant's on one
    keep-alive connection of its own, in order (tests/bench/harness.py's)."""
    report, tenants = SendReport(), list(bodies)
    started = time.perf_counter()

    async def sender(index: int, tenant: str) -> None:
        connection = _Connection(f"{web_url}/webhooks/crm/{tenant}")
        for i, raw in enumerate(bodies[tenant]):
            due = started + (i * len(tenants) + index) / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))  # pacing the stream
            body, headers = signed_request(SECRET, raw)
            try:
                report.statuses[await connection.post(body, headers)] += 1
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                report.errors[type(exc).__name__] += 1
                connection.close()
        connection.close()

    await asyncio.gather(*(sender(n, t) for n, t in enumerate(tenants)))
    report.elapsed_s = time.perf_counter() - started
    return report


def post_spread(web_url: str, events: dict[str, list[dict[str, Any]]], rate: float
                ) -> SendReport:
    bodies = {tenant: [orjson.dumps(e) for e in evs] for tenant, evs in events.items()}
    return asyncio.run(_post_spread(web_url, bodies, rate))


# -- waiting until everything is folded and delivered ----------------------------------------------

TARGETS = ("rentix", "travtus")


def busy(client: Any, tenants: Sequence[str]) -> int:
    """Tenants with events to fold, groups due or flushing, writes waiting (0: all settled)."""
    pipe = client.pipeline(transaction=False)
    for tenant in tenants:
        keys = keyspace(tenant)
        pipe.llen(keys.INBOX)
        for zset in (keys.DUE, keys.FLUSHING, keys.SENDERS):
            pipe.zcard(zset)
        for target in TARGETS:
            pipe.hlen(keys.OUTBOX + target)
            pipe.exists(keys.OUTBOX_BATCH + target)
    answers = pipe.execute()
    per = len(answers) // len(tenants)
    return sum(1 for n in range(len(tenants)) if any(answers[n * per:(n + 1) * per]))


def stuck(client: Any, tenants: Sequence[str]) -> list[str]:
    """What would never settle: held syncs, quarantined listings."""
    found = []
    for tenant in tenants:
        keys = keyspace(tenant)
        for target in TARGETS:
            for name, key in (("held", keys.HELD + target), ("quarantine",
                                                              keys.QUARANTINE + target)):
                count = int(client.hlen(key))
                if count:
                    found.append(f"{tenant}: {count} {name} on {target}")
    return found


def behind(boxes: Sandboxes, events: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Per tenant, listings a portal lacks at their final version (prices name versions)."""
    out = {}
    for tenant, evs in events.items():
        finals, client = final_state(evs), boxes.clients[tenant]
        missing = set(rentix_behind(client, finals))
        missing |= set(travtus_behind(client, finals, groups_of(evs)))
        if missing:
            out[tenant] = len(missing)
    return out


def settle(client: Any, boxes: Sandboxes, events: dict[str, list[dict[str, Any]]],
           timeout: float, poll_s: float) -> tuple[float | None, dict[str, int], list[str]]:
    """Seconds until settled and witnessed (None: not within ``timeout``), what the portals
    still lack then, and what is stuck."""
    started, tenants = time.monotonic(), list(events)
    deadline = started + timeout
    lacking: dict[str, int] = {}
    while time.monotonic() < deadline:
        if not busy(client, tenants):
            lacking = behind(boxes, events)
            if not lacking:
                return time.monotonic() - started, {}, []
        time.sleep(poll_s)  # a poll interval bounded by the deadline above
    return None, lacking or behind(boxes, events), stuck(client, tenants)


# -- readings --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reading:
    calls: Counter[str]
    sys_s: float
    user_s: float
    runs: int  # times the scheduler ran the process (/proc/PID/schedstat): its wake-ups

    @property
    def cpu_s(self) -> float:
        return self.sys_s + self.user_s

    def __add__(self, other: Reading) -> Reading:
        return Reading(self.calls + other.calls, self.sys_s + other.sys_s,
                       self.user_s + other.user_s, self.runs + other.runs)


NOTHING = Reading(Counter(), 0.0, 0.0, 0)


def read(client: redis.Redis, pid: int | None) -> Reading:
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    cpu: dict[str, Any] = client.info("cpu")  # type: ignore[assignment]
    calls = Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in
                     stats.items()})
    return Reading(calls, float(cpu["used_cpu_sys"]), float(cpu["used_cpu_user"]),
                   scheduled(pid) if pid is not None else 0)


def read_node(node: Node) -> Reading:
    return read(node.client(), node.process.pid if node.process is not None else None)


def delta(before: Reading, after: Reading) -> Reading:
    calls = Counter(after.calls)
    calls.subtract(before.calls)
    return Reading(+calls, after.sys_s - before.sys_s, after.user_s - before.user_s,
                   after.runs - before.runs)


@dataclass
class MasterFigures:
    node: Node
    tenants: list[tuple[str, int]]  # (tenant, slot)
    slots: int
    deployment_keys: list[str]
    used: Reading

    @property
    def calls(self) -> int:
        return sum(self.used.calls.values())


@dataclass
class Phase:
    name: str
    events: int  # stored: answered 202
    counted: int  # the bridge's own count of events accepted
    report: SendReport
    settled_s: float | None
    lacking: dict[str, int]
    stuck: list[str]
    masters: list[MasterFigures]
    replicas: Reading
    jobs: Reading | None  # None: arq's queue on the state's own node
    bridge_cpu_s: dict[str, float]
    window_s: float  # from the reading before the first post to the one once delivered
    idle_s: float  # the bridge running, no event: just before the window
    idle_masters: Reading
    idle_replicas: Reading
    cluster_of: int = 0  # masters of its cluster (0: a plain node)
    syscalls: Counter[str] = field(default_factory=Counter)  # the masters', with --syscalls
    layout: str = ""

    @property
    def masters_used(self) -> Reading:
        return sum((m.used for m in self.masters), NOTHING)

    @property
    def masters_cpu_s(self) -> float:
        return self.masters_used.cpu_s

    @property
    def replicas_cpu_s(self) -> float:
        return self.replicas.cpu_s

    @property
    def jobs_cpu_s(self) -> float | None:
        return None if self.jobs is None else self.jobs.cpu_s

    def per_event_us(self, seconds: float) -> float:
        return seconds / self.events * 1e6 if self.events else 0.0

    def idle_share_us(self, idle: Reading) -> float:
        """What the window would have cost with no event at all (the idle rate), per event."""
        return self.per_event_us(idle.cpu_s / self.idle_s * self.window_s) if self.idle_s \
            else 0.0

    @property
    def delivered(self) -> bool:
        return self.settled_s is not None

    def shares(self) -> list[float]:
        total = sum(m.calls for m in self.masters) or 1
        return [m.calls / total for m in self.masters]

    def worst(self) -> float:
        """The busiest master's share of the commands over its fair share."""
        return max(self.shares()) * len(self.masters)


def layout(cluster: Cluster, tenants: Sequence[str]) -> dict[Node, list[tuple[str, int]]]:
    owners = cluster.owners()
    out: dict[Node, list[tuple[str, int]]] = {m: [] for m in cluster.masters()}
    for tenant in tenants:
        slot = cluster.slot_of(keyspace(tenant).PREFIX)
        out.setdefault(owners[slot], []).append((tenant, slot))
    return out


def slot_counts(cluster: Cluster) -> Counter[Node]:
    return Counter(cluster.owners().values())


# -- one measured phase ----------------------------------------------------------------------------

@dataclass
class Deployment:
    """Where a phase's state lives: a cluster, or one node (``cluster`` None)."""

    masters: list[Node]
    replicas: list[Node]
    state_url: str
    cluster: Cluster | None
    client: Any  # redis-py's synchronous client of the state (a RedisCluster on a cluster)
    jobs_apart: bool = True  # arq's queue on a plain Redis of its own (jobs_url)


def measure(name: str, number: int, deployment: Deployment, tenants: Sequence[str],
            boxes: Sandboxes, procs: Processes, tmp: Path, args: argparse.Namespace) -> Phase:
    events = streams(tenants, args, number)
    nodes = [*deployment.masters, *deployment.replicas]
    with contextlib.ExitStack() as stack:
        jobs_client: redis.Redis | None = None
        jobs_pid: int | None = None
        jobs_url = ""
        if deployment.jobs_apart:
            jobs = stack.enter_context(redis_server(server_binary()))
            jobs_client, jobs_url = stack.enter_context(redis.Redis(port=jobs.port)), jobs.url
            jobs_pid = jobs.process.pid if jobs.process is not None else None
        config = tmp / f"bridge-{name}.toml"
        config.write_text(bridge_toml(deployment.state_url, deployment.cluster is not None,
                                      jobs_url, boxes.urls))

        def readings() -> dict[int, Reading]:
            out = {node.port: read_node(node) for node in nodes}
            if jobs_client is not None:
                out[0] = read(jobs_client, jobs_pid)
            return out

        with running_bridge(procs, config, args.workers) as bridge:
            counted_before = counted(deployment.client, tenants)
            time.sleep(2)  # the processes' start behind them
            idle_before, idle_at = readings(), time.monotonic()
            time.sleep(args.idle_s)  # the idle rate: the bridge running, no event
            before, started = readings(), time.monotonic()
            cpu_before = {n: cpu_seconds(pid) for n, pid in bridge.pids.items()}
            with traced(deployment.masters if args.syscalls else [], tmp) as syscalls:
                report = post_spread(bridge.web_url, events, args.rate)
            settled_s, lacking, stuck_now = settle(deployment.client, boxes, events,
                                                   args.settle_timeout, args.poll_s)
            after, ended = readings(), time.monotonic()
            bridge_cpu = {n: cpu_seconds(pid) - cpu_before[n] for n, pid in bridge.pids.items()}
            count = counted(deployment.client, tenants) - counted_before
    where = (layout(deployment.cluster, tenants) if deployment.cluster is not None
             else {deployment.masters[0]: [(t, -1) for t in tenants]})
    slots = (slot_counts(deployment.cluster) if deployment.cluster is not None
             else Counter({deployment.masters[0]: 16384}))
    homes = ({key: deployment.cluster.master_of_key(key) for key in DEPLOYMENT_KEYS}
             if deployment.cluster is not None
             else dict.fromkeys(DEPLOYMENT_KEYS, deployment.masters[0]))
    masters = [MasterFigures(m, where.get(m, []), slots[m],
                             [key for key, home in homes.items() if home is m],
                             delta(before[m.port], after[m.port])) for m in deployment.masters]

    def summed(first: dict[int, Reading], last: dict[int, Reading], which: list[Node]
               ) -> Reading:
        return sum((delta(first[n.port], last[n.port]) for n in which), NOTHING)

    return Phase(
        name, report.statuses.get(202, 0), count, report, settled_s, lacking, stuck_now,
        masters, summed(before, after, deployment.replicas),
        delta(before[0], after[0]) if 0 in before else None, bridge_cpu,
        window_s=ended - started, idle_s=started - idle_at,
        idle_masters=summed(idle_before, before, deployment.masters),
        idle_replicas=summed(idle_before, before, deployment.replicas),
        cluster_of=len(deployment.masters) if deployment.cluster is not None else 0,
        syscalls=syscalls)


@contextlib.contextmanager
def traced(nodes: Sequence[Node], tmp: Path) -> Iterator[Counter[str]]:
    """The system calls ``nodes`` make in the block, counted by ``strace -c`` (which slows
    them down: a run with it measures calls, not CPU)."""
    found: Counter[str] = Counter()
    tracers = []
    for node in nodes:
        assert node.process is not None
        out = tmp / f"strace-{node.port}.txt"
        tracers.append((subprocess.Popen(["strace", "-c", "-f", "-p", str(node.process.pid),
                                          "-o", str(out)], stderr=subprocess.DEVNULL), out))
    time.sleep(1 if tracers else 0)  # attached
    try:
        yield found
    finally:
        for tracer, _ in tracers:
            tracer.send_signal(signal.SIGINT)
        for tracer, out in tracers:
            tracer.wait(timeout=30)
            for calls, name in re.findall(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?"
                                          r"(\w+)$", out.read_text(), re.M):
                if name != "total":
                    found[name] += int(calls)


def counted(client: Any, tenants: Sequence[str]) -> int:
    """The bridge's own count of events stored, over every tenant (lb:{t:NAME}:metrics)."""
    pipe = client.pipeline(transaction=False)
    for tenant in tenants:
        pipe.hget(keyspace(tenant).METRICS, counters.WEBHOOK_EVENTS.field("accepted"))
    return sum(int(v or 0) for v in pipe.execute())


# -- moving tenants --------------------------------------------------------------------------------

def cli_rebalance(cluster: Cluster, weights: dict[Node, float] | None = None) -> str:
    """``redis-cli --cluster rebalance`` (with ``--cluster-weight`` when given); what it said
    that matters."""
    command = [cluster.cli, "--cluster", "rebalance", cluster.masters()[0].address]
    if weights:
        command += ["--cluster-weight",
                    *(f"{node.node_id}={w:.3f}" for node, w in weights.items())]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[1:])} failed:\n{done.stdout}{done.stderr}")
    cluster.wait_healthy(60)
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)  # redis-cli's colours
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    moves = [line for line in lines if line.startswith("Moving")]
    said = [line for line in lines if "rebalancing" in line.lower() or "threshold" in line]
    return "; ".join(said + moves[:6] + ([f"... {len(moves)} moves"] if len(moves) > 6 else []))


@dataclass(frozen=True)
class LoadModel:
    """Commands on a master = per_tenant x its tenants (+ extra where the deployment's keys
    are), fitted on a measured phase."""

    per_tenant: float
    extra: float
    home: Node

    @classmethod
    def fit(cls, phase: Phase) -> LoadModel:
        home = next(m for m in phase.masters if k.WAKE in m.deployment_keys)
        others = [m for m in phase.masters if m is not home]
        per = sum(m.calls for m in others) / max(1, sum(len(m.tenants) for m in others))
        return cls(per, max(0.0, home.calls - per * len(home.tenants)), home.node)

    def counts(self, masters: Sequence[Node], tenants: int) -> dict[Node, int]:
        """Tenants per master that make the predicted loads most even."""
        load = {m: self.extra if m is self.home else 0.0 for m in masters}
        count = dict.fromkeys(masters, 0)
        for _ in range(tenants):
            m = min(masters, key=lambda m: (load[m] + self.per_tenant, m.port))
            load[m] += self.per_tenant
            count[m] += 1
        return count

    def predicted_worst(self, counts: dict[Node, int]) -> float:
        loads = [self.per_tenant * n + (self.extra if m is self.home else 0.0)
                 for m, n in counts.items()]
        return max(loads) / (sum(loads) or 1) * len(loads)


def partition(cluster: Cluster, tenants: Sequence[str], model: LoadModel) -> list[str]:
    """Move the fewest tenants' slots so each master holds the model's count."""
    where = layout(cluster, tenants)
    wanted = model.counts(list(where), len(tenants))
    spare = [(t, s) for m, held in where.items() for t, s in held[wanted[m]:]]
    moves = []
    for master, held in where.items():
        for _ in range(wanted[master] - len(held)):
            tenant, slot = spare.pop()
            cluster.move_slot(slot, to=master)
            moves.append(f"{tenant} (slot {slot}) -> {master.address}")
    cluster.wait_healthy(60)
    return moves


# -- printing --------------------------------------------------------------------------------------

def phase_lines(p: Phase) -> Iterator[str]:
    r = p.report
    delivered = (f"folded and delivered {p.settled_s:.1f} s after the last post"
                 if p.delivered else f"NOT settled: portals lacking {p.lacking}; stuck "
                 f"{p.stuck[:5]}")
    yield (f"[{p.name}] {r.sent:,} events posted in {r.elapsed_s:.1f} s "
           f"({r.sent / max(r.elapsed_s, 1e-9):.0f}/s), answers {dict(r.statuses)}"
           f"{f', errors {dict(r.errors)}' if r.errors else ''}; the bridge counted "
           f"{p.counted:,} stored; {delivered}")
    if p.layout:
        yield f"  layout: {p.layout}"
    shares = p.shares()
    cpu_total = p.masters_cpu_s or 1e-9
    fair = 1 / len(p.masters)
    for m, share in zip(p.masters, shares, strict=True):
        names = ", ".join(f"{t}@{s}" if s >= 0 else t for t, s in m.tenants)
        top = ", ".join(f"{c} {n / max(m.calls, 1):.0%}" for c, n in
                        m.used.calls.most_common(4))
        keys = f"; holds {', '.join(m.deployment_keys)}" if m.deployment_keys else ""
        yield (f"  master {m.node.address}: {len(m.tenants)} tenants, {m.slots:,} slots{keys}")
        if len(p.masters) > 1:
            yield f"    tenants@slot: {names}"
        yield (f"    commands {m.calls:,} = {share:.1%} ({share / fair:.2f}x fair); CPU "
               f"{m.used.cpu_s:.2f} s = {m.used.cpu_s / cpu_total:.1%}, "
               f"{p.per_event_us(m.used.cpu_s):.0f} µs per event; busiest: {top}")
    per_event = sum(m.calls for m in p.masters) / max(p.events, 1)
    bridge = ", ".join(f"{n} {p.per_event_us(s):.0f}" for n, s in p.bridge_cpu_s.items())
    jobs = ("arq's queue on the same node" if p.jobs_cpu_s is None
            else f"jobs Redis {p.per_event_us(p.jobs_cpu_s):.0f} µs")
    used = p.masters_used
    yield (f"  Redis CPU per event: masters {p.per_event_us(used.cpu_s):.0f} µs (sum; sys "
           f"{p.per_event_us(used.sys_s):.0f}, user {p.per_event_us(used.user_s):.0f}; "
           f"{p.idle_share_us(p.idle_masters):.0f} of it the idle rate over the "
           f"{p.window_s:.0f} s window), replicas {p.per_event_us(p.replicas_cpu_s):.0f} µs "
           f"({p.idle_share_us(p.idle_replicas):.0f} idle), {jobs}")
    idle_s = max(p.idle_s, 1e-9)
    yield (f"  {per_event:.1f} commands and {used.runs / max(p.events, 1):.2f} wake-ups "
           f"(times scheduled) per event on the masters, "
           f"{used.calls.total() / max(used.runs, 1):.1f} commands per wake-up; idle: "
           f"{p.idle_masters.calls.total() / idle_s:.0f} commands/s, "
           f"{p.idle_masters.cpu_s / idle_s * 1000:.1f} ms CPU/s on the masters; bridge "
           f"processes' CPU µs per event: {bridge}")
    if p.syscalls:
        per = ", ".join(f"{name} {n / max(p.events, 1):.1f}"
                        for name, n in p.syscalls.most_common(7))
        yield f"  system calls per event on the masters (strace -c, while posting): {per}"
    if len(p.masters) > 1:
        verdict = "PASS" if p.worst() <= BALANCE_AIM else "FAIL"
        yield (f"  balance: the busiest master has {p.worst():.2f}x its fair share of commands"
               f" (aim <= {BALANCE_AIM}x): {verdict}")


def cost_lines(base: Phase, cluster: Phase, aim: bool = True) -> Iterator[str]:
    """``cluster``'s masters' Redis CPU per event against ``base``'s: the state's alone (where
    arq's queue shared ``base``'s node, less what ``cluster``'s jobs Redis spent on it at the
    same load: an estimate), and the whole deployment's (queue included on both sides)."""
    one = base.per_event_us(base.masters_cpu_s)
    many = cluster.per_event_us(cluster.masters_cpu_s)
    jobs = cluster.per_event_us(cluster.jobs_cpu_s or 0.0)
    delivered = base.delivered and cluster.delivered
    name = "one node" if base.cluster_of == 0 else f"the {base.name} cluster's master"
    if base.jobs_cpu_s is None:  # arq's queue on the one node
        state = one - jobs
        note = (f"{name} (arq's queue on it: {one:.0f} µs, less the {cluster.name} cluster's "
                f"jobs Redis {jobs:.0f} µs)")
        whole, whole_one = many + jobs, one
    else:
        state, note = one, name
        whole = many + jobs
        whole_one = one + base.per_event_us(base.jobs_cpu_s)
    queue = " + jobs Redis" if base.jobs is not None else ""
    for label, ours, mine, theirs, how in (
            ("the state's", "masters", many, state, note),
            ("the whole deployment's (arq's queue included)", "masters + jobs Redis", whole,
             whole_one, f"{name}{queue}")):
        ratio = mine / theirs if theirs > 0 else float("inf")
        verdict = ((": PASS" if ratio <= COST_AIM and delivered else ": FAIL")
                   + f" (aim <= {COST_AIM}x)") if aim else ""
        yield (f"{'cost' if aim else '  diagnosis'}, {label} Redis CPU per event: the "
               f"{cluster.name} cluster's {ours} {mine:.0f} µs against {how} {theirs:.0f} µs: "
               f"{ratio:.2f}x{verdict}")
    indent = "  " if aim else "    "
    yield from (indent + line for line in why_lines(base, cluster))
    if aim and many and state > 0:
        masters = len(cluster.masters)
        yield (f"  at this load's CPU per event (it falls as a server's load grows: more "
               f"commands per wake-up) one core holding the state serves ~{1e6 / state:,.0f} "
               f"events/s; a master ~{1e6 / many:,.0f} events/s of its own tenants', so "
               f"{masters} masters ~{masters * 1e6 / many:,.0f}/s with the tenants spread "
               f"evenly (one tenant never more than one master's)")


def why_lines(base: Phase, other: Phase) -> Iterator[str]:
    """Where the masters' CPU per event differs: system and user time, how often the servers
    were woken and how many commands each wake-up served, commands per event by command."""
    def per(p: Phase, value: float) -> float:
        return value / max(p.events, 1)

    def side(p: Phase) -> str:
        used = p.masters_used
        return (f"{p.name} sys {p.per_event_us(used.sys_s):.0f} + user "
                f"{p.per_event_us(used.user_s):.0f} µs, {per(p, used.runs):.1f} wake-ups and "
                f"{per(p, used.calls.total()):.1f} commands per event "
                f"({used.calls.total() / max(used.runs, 1):.1f} per wake-up), replicas "
                f"{p.per_event_us(p.replicas_cpu_s):.0f} µs")

    yield f"masters: {side(other)}; {side(base)}"
    mine, theirs = other.masters_used.calls, base.masters_used.calls
    diff = {c: per(other, mine.get(c, 0)) - per(base, theirs.get(c, 0))
            for c in set(mine) | set(theirs)}
    more = [f"{c} {v:+.2f}" for c, v in sorted(diff.items(), key=lambda cv: -abs(cv[1]))[:8]
            if abs(v) >= 0.05]
    yield f"commands per event, {other.name} minus {base.name}: {', '.join(more) or 'none'}"
    if other.syscalls and base.syscalls:
        names = [n for n, _ in (other.syscalls + base.syscalls).most_common(7)]
        yield ("system calls per event while posting (strace -c), " + ", ".join(
            f"{n} {per(other, other.syscalls[n]):.1f} against {per(base, base.syscalls[n]):.1f}"
            for n in names))


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    cores = sum(1 for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("processor"))
    return f"{cores} x {model}"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=150, help="events/s over all tenants")
    parser.add_argument("--groups", type=int, default=5, help="groups per tenant")
    parser.add_argument("--per-group", type=int, default=20, help="listings per group")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1,
                        help="per master, and of the single node")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated, of {', '.join(PHASES)}")
    parser.add_argument("--idle-s", type=float, default=10,
                        help="the idle rate is read this long before each phase's stream")
    parser.add_argument("--settle-timeout", type=float, default=300)
    parser.add_argument("--poll-s", type=float, default=2.0,
                        help="how often the settle is checked (each check reads every tenant)")
    parser.add_argument("--single-jobs", choices=["same", "apart"], default="same",
                        help="arq's queue in the single phase: on the node itself (the "
                        "default deployment), or on a Redis of its own (jobs_url with cluster "
                        "= false: the worker then reads the state from jobs_url, "
                        "workers/worker.py, so nothing is folded)")
    parser.add_argument("--syscalls", action="store_true",
                        help="count the masters' system calls while posting (strace -c: it "
                        "slows them, so that run's CPU figures are not the figures)")
    parser.add_argument("--logs", default=None,
                        help="keep the processes' logs and configurations in this directory")
    args = parser.parse_args()
    args.phases = [p for p in args.phases.split(",") if p]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}")
    return args


def main() -> None:
    args = arguments()
    started = time.monotonic()
    tenants = tenant_names(args.tenants)
    print(f"cluster bench: {args.tenants} tenants x {args.groups * args.per_group} listings, "
          f"{args.rate:g} events/s for {args.seconds:g} s, {args.workers} workers; "
          f"{args.masters} masters x {args.replicas} replicas; phases {', '.join(args.phases)}")
    print(f"on {revision()}; {version(server_binary())}; {machine()}", flush=True)
    results: dict[str, Phase] = {}
    with tempfile.TemporaryDirectory(prefix="lb-cluster-bench-") as d:
        tmp = Path(args.logs or d)
        tmp.mkdir(parents=True, exist_ok=True)
        procs = Processes(tmp)
        try:
            with sandboxes(tenants, procs) as boxes:
                run_phases(args, tenants, boxes, procs, tmp, results)
        except BaseException:
            print(procs.tails(), flush=True)
            raise
        finally:
            procs.stop()
    if "single" in results and "hashed" in results:
        print("\n".join(cost_lines(results["single"], results["hashed"])))
    if "one-master" in results:  # what the cluster mode costs, and what spreading costs
        for base, other in (("single", "one-master"), ("one-master", "hashed")):
            if base in results and other in results:
                print("\n".join(cost_lines(results[base], results[other], aim=False)))
    balanced = [p for p in results.values() if len(p.masters) > 1]
    if balanced:
        print("balance: " + "; ".join(
            f"{p.name} {p.worst():.2f}x ({'PASS' if p.worst() <= BALANCE_AIM else 'FAIL'})"
            for p in balanced) + f" (aim <= {BALANCE_AIM}x its fair share)")
    print(f"run time {time.monotonic() - started:,.0f} s")


def show(phase: Phase, results: dict[str, Phase]) -> None:
    results[phase.name] = phase
    print("\n".join(phase_lines(phase)), flush=True)


def run_phases(args: argparse.Namespace, tenants: list[str], boxes: Sandboxes,
               procs: Processes, tmp: Path, results: dict[str, Phase]) -> None:
    number = 0

    def run(name: str, deployment: Deployment, note: str = "") -> Phase:
        nonlocal number
        phase = measure(name, number, deployment, tenants, boxes, procs, tmp, args)
        phase.layout = note
        number += 1
        show(phase, results)
        return phase

    def on(cluster: Cluster, client: Any) -> Deployment:
        masters = cluster.masters()
        return Deployment(masters, [n for n in cluster.nodes if n not in masters],
                          "redis://" + ",".join(cluster.seeds), cluster, client)

    if "single" in args.phases:
        with single_node(args.replicas) as (master, replicas), \
                redis.Redis(host=HOST, port=master.port) as client:
            run("single", Deployment([master], replicas, master.url, None, client,
                                     jobs_apart=args.single_jobs == "apart"))
    if "one-master" in args.phases:
        boxes.reset()
        with one_master_cluster(args.replicas) as cluster, \
                contextlib.closing(cluster.client(decode_responses=False)) as client:
            run("one-master", on(cluster, client), "one master holds every slot")
    if not {"hashed", "rebalanced", "partitioned"} & set(args.phases):
        return
    boxes.reset()
    with redis_cluster(masters=args.masters, replicas=args.replicas) as cluster, \
            contextlib.closing(cluster.client(decode_responses=False)) as client:
        hashed = run("hashed", on(cluster, client),
                     "as the slots hash (redis-cli --cluster create)") \
            if "hashed" in args.phases else None
        if hashed is not None:
            print("\n".join(chance_lines(hashed, args.tenants)), flush=True)
        if "rebalanced" in args.phases:
            before = tenant_homes(cluster, tenants)
            said = cli_rebalance(cluster)
            print(f"redis-cli --cluster rebalance: {said or 'nothing said'}", flush=True)
            note = f"after plain rebalance ({said})"
            if hashed is not None:
                # A master's weight: its fair share over its measured share (within 0.25-4x).
                weights = {m.node: min(4.0, max(0.25, (1 / len(hashed.masters)) / max(s, 1e-6)))
                           for m, s in zip(hashed.masters, hashed.shares(), strict=True)}
                said = cli_rebalance(cluster, weights)
                shown = ", ".join(f"{n.address}={w:.2f}" for n, w in weights.items())
                print(f"redis-cli --cluster rebalance --cluster-weight {shown}: "
                      f"{said or 'nothing said'}", flush=True)
                note = (f"after rebalance --cluster-weight {shown}; slots now "
                        + ", ".join(f"{n.address} {c:,}" for n, c in
                                    slot_counts(cluster).items()))
            moved = [t for t, home in tenant_homes(cluster, tenants).items()
                     if before[t] != home]
            print(f"  tenants moved by rebalance: {len(moved)} {moved}", flush=True)
            if moved:
                run("rebalanced", on(cluster, client), f"{note}; {len(moved)} tenants moved")
        if "partitioned" in args.phases:
            if hashed is None:
                raise SystemExit("the partitioned phase is fitted on the hashed phase: run both")
            # The deployment's keys where they are now (a rebalance may have moved them).
            model = dataclasses.replace(LoadModel.fit(hashed),
                                        home=cluster.master_of_key(k.WAKE))
            counts = model.counts(cluster.masters(), len(tenants))
            moves = partition(cluster, tenants, model)
            plan = ", ".join(f"{m.address} {n}" for m, n in counts.items())
            print(f"partition: {model.per_tenant:,.0f} commands per tenant, "
                  f"{model.extra:,.0f} more on {model.home.address} (the deployment's keys: "
                  f"{model.extra / max(model.per_tenant, 1):.1f} tenants' worth); tenants per "
                  f"master {plan}, predicted busiest {model.predicted_worst(counts):.2f}x fair; "
                  f"{len(moves)} slot moves: {moves}", flush=True)
            run("partitioned", on(cluster, client),
                f"tenants per master {plan} ({len(moves)} slots moved)")


def chance_lines(hashed: Phase, tenants: int, draws: int = 100_000) -> Iterator[str]:
    """What hashing gives tenants in general, not only these names: tenants dropped uniformly
    on the masters (equal slot counts), each master's load the model fitted on ``hashed``."""
    model = LoadModel.fit(hashed)
    masters = len(hashed.masters)
    rng = random.Random(32)
    worst: list[float] = []
    for _ in range(draws):
        counts = Counter(rng.randrange(masters) for _ in range(tenants))
        loads = [model.per_tenant * counts[m] + (model.extra if m == 0 else 0.0)
                 for m in range(masters)]
        worst.append(max(loads) / sum(loads) * masters)
    worst.sort()
    over = sum(1 for w in worst if w > BALANCE_AIM) / draws
    yield (f"  by chance ({tenants} tenants hashed to {masters} masters with even slot counts, "
           f"the deployment's keys worth {model.extra / max(model.per_tenant, 1):.1f} tenants on "
           f"one; {draws:,} draws): busiest master median {worst[draws // 2]:.2f}x fair, "
           f"p90 {worst[int(draws * 0.9)]:.2f}x, p99 {worst[int(draws * 0.99)]:.2f}x; above "
           f"{BALANCE_AIM}x in {over:.1%} of deployments")


def tenant_homes(cluster: Cluster, tenants: Sequence[str]) -> dict[str, int]:
    owners = cluster.owners()
    return {t: owners[cluster.slot_of(keyspace(t).PREFIX)].port for t in tenants}


if __name__ == "__main__":
    main()
