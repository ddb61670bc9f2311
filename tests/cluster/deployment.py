"""The whole bridge on a real Redis Cluster, for the fault tests (tests/cluster/test_faults.py):
six cluster nodes (tests/support/cluster.py), a plain Redis for arq's queue (``jobs_url``), one
sandbox as both portals (in this process), ``bridge serve`` and ``bridge worker`` as real
processes, each logging to a file beside the configuration (tests/support/stack.py's ``Stack``
holds the workers and the sandbox), several tenants, each with its keys in one slot
(``lb:{t:NAME}:``), and a CRM per tenant posting a steady stream of signed events from a
thread, retrying what is not accepted as a CRM would."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bridge.sandbox import SandboxSettings
from bridge.sandbox.app import create_app as create_sandbox
from bridge.settings import load_settings
from tests.conftest import SECRET
from tests.support import crm
from tests.support.cluster import Cluster, Node, redis_cluster
from tests.support.servers import RedisServer, free_port, redis_server, serve_app, wait_until
from tests.support.stack import Stack

# The portals take every write at once: these tests are about Redis, not rate limits. All the
# tenants share the one sandbox (and its credentials, so one rate budget); their refs and
# groups carry their names.
RENTIX_PER_MINUTE = 6000
RENTIX_BULK_PER_MINUTE = 600
DEBOUNCE = {"window_ms": 150, "max_wait_ms": 1000}
# A flush that a fault cuts off runs again once its lease lapses: a short one, so that the
# bridge carries on within seconds of a failover.
LEASE_S = 3
DELIVERY = {"job_timeout_s": 5, "retry_base_s": 0.2, "retry_max_s": 1.0,
            "poll_interval_ms": 20, "lease_ms": LEASE_S * 1000}
NODE_TIMEOUT_MS = 1000
# How long `bridge serve` and `bridge worker` may take to exit after SIGTERM.
STOP_S = 15.0
# A price that carries the version, so each portal's copy says which version it holds.
BASE_PRICE = 1000


def _pairs(values: dict[str, Any]) -> list[str]:
    return [f"{key} = {json.dumps(value)}" for key, value in values.items()]


def config_text(cluster: Cluster, jobs_url: str, sandbox: str, tenants: list[str],
                min_replicas: int) -> str:
    """The bridge on ``cluster`` (every node a seed), arq's queue on ``jobs_url``, each of
    ``tenants`` with both portals on ``sandbox``."""
    seeds = ",".join(cluster.seeds)
    lines = [f'redis_url = "redis://{seeds}"',
             "[redis]", *_pairs({"cluster": True, "jobs_url": jobs_url,
                                 "min_replicas": min_replicas}),
             "[debounce]", *_pairs(DEBOUNCE), "[delivery]", *_pairs(DELIVERY)]
    targets: list[dict[str, Any]] = [
        {"name": "rentix", "kind": "rentix", "base_url": f"{sandbox}/rentix/api/v1",
         "api_key": "sandbox", "requests_per_minute": RENTIX_PER_MINUTE * 9 // 10,
         "bulk_per_minute": RENTIX_BULK_PER_MINUTE * 9 // 10},
        {"name": "travtus", "kind": "travtus", "base_url": f"{sandbox}/travtus",
         "token_url": f"{sandbox}/travtus/oauth2/token", "client_id": "sandbox",
         "client_secret": "sandbox"},
    ]
    for tenant in tenants:
        lines += ["[[tenants]]", *_pairs({"name": tenant, "webhook_secrets": [SECRET]})]
        for target in targets:
            lines += ["[[tenants.targets]]", *_pairs(target)]
    return "\n".join(lines) + "\n"


@dataclass
class Deployment:
    cluster: Cluster
    jobs: RedisServer
    stack: Stack
    web: subprocess.Popen[bytes]  # `bridge serve`
    web_log: Path
    url: str  # the web process's
    tenants: list[str]
    exits: list[str] = field(default_factory=list)  # how the processes stopped, if not well

    def slot(self, tenant: str) -> int:
        return self.cluster.slot_of("{t:" + tenant + "}")

    def master_of(self, tenant: str) -> Node:
        return self.cluster.master_of_slot(self.slot(tenant))

    def process_problems(self) -> list[str]:
        """Once stopped: how the processes exited, if not well, and the web's tracebacks."""
        return [*self.exits, *self.web_errors()]

    def web_errors(self) -> list[str]:
        """What the web process logged as a failure: each traceback (an exception out of a
        request, or out of an event loop callback) with the line that introduced it, and
        its last line."""
        lines = self.web_log.read_text(errors="replace").splitlines()
        found = []
        for i, line in enumerate(lines):
            if line.startswith("Traceback (most recent call last)"):
                end = i + 1
                while end < len(lines) and (lines[end].startswith((" ", "\t"))
                                            or not lines[end].strip()):
                    end += 1
                head = next((lines[j].strip() for j in range(i - 1, max(i - 6, -1), -1)
                             if "ERROR" in lines[j]), "")
                last = lines[end].strip() if end < len(lines) else ""
                found.append(f"web: {head[:160]} ... {last[:240]}")
        return list(dict.fromkeys(found))  # a chained exception's parts, each once


@contextlib.contextmanager
def deployment(tmp_path: Path, tenants: list[str], min_replicas: int,
               workers: int = 2) -> Iterator[Deployment]:
    """Everything up: the cluster, the job queue's Redis, the sandbox, `bridge serve` (on
    uvloop, as in production) and ``workers`` `bridge worker` processes."""
    sandbox_settings = SandboxSettings(rentix_per_minute=RENTIX_PER_MINUTE,
                                       rentix_bulk_per_minute=RENTIX_BULK_PER_MINUTE)
    with redis_cluster(node_timeout_ms=NODE_TIMEOUT_MS) as cluster, redis_server() as jobs, \
            serve_app(create_sandbox(sandbox_settings)) as sandbox_url:
        config = tmp_path / "bridge.toml"
        config.write_text(config_text(cluster, jobs.url, sandbox_url, tenants, min_replicas))
        settings = load_settings(config)
        port = free_port()
        web_log = tmp_path / "serve.log"
        with web_log.open("wb") as stderr:
            web = subprocess.Popen(
                [sys.executable, "-m", "bridge.cli", "serve", "--config", str(config),
                 "--port", str(port)], stdout=subprocess.DEVNULL, stderr=stderr)
        url = f"http://127.0.0.1:{port}"
        exits: list[str] = []
        try:
            with httpx.Client(base_url=url, timeout=10) as bridge, \
                    httpx.Client(base_url=sandbox_url, timeout=30) as sandbox:
                _wait_ready(bridge, web, web_log)
                stack = Stack(settings, config, bridge, sandbox)
                try:
                    for _ in range(workers):
                        stack.start_worker()
                    yield Deployment(cluster, jobs, stack, web, web_log, url, tenants, exits)
                finally:
                    exits += _stop("bridge worker", stack.workers)
        finally:
            exits += _stop("bridge serve", [web])


def _stop(what: str, processes: list[subprocess.Popen[bytes]],
          within_s: float = STOP_S) -> list[str]:
    """SIGTERM, and what went wrong: a process that did not exit within ``within_s`` (then
    killed) or exited non-zero."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + within_s
    problems = []
    for process in processes:
        try:
            code = process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
            problems.append(f"{what} {process.pid} did not exit within {within_s:g} s of "
                            "SIGTERM (killed)")
            continue
        if code not in (0, -signal.SIGTERM):
            problems.append(f"{what} {process.pid} exited with {code}")
    return problems


def _wait_ready(bridge: httpx.Client, web: subprocess.Popen[bytes], log: Path) -> None:
    def ready() -> bool:
        assert web.poll() is None, f"bridge serve ended:\n{log.read_text(errors='replace')}"
        try:
            return bridge.get("/readyz", timeout=1).is_success
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=30, what=lambda: f"bridge serve:\n{log.read_text()[-3000:]}")


# -- the CRM -------------------------------------------------------------------------------------

@dataclass
class Attempt:
    """One POST of an event: when it started and ended (monotonic), its status (0: no answer)
    and its Retry-After header."""

    started: float
    ended: float
    status: int
    retry_after: str | None
    answer: str


@dataclass
class Sent:
    """One event and every attempt to deliver it, the last one accepted (2xx) unless the
    stream was stopped before."""

    webhook_id: str
    group: str
    ref: str
    version: int
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def accepted(self) -> Attempt | None:
        last = self.attempts[-1] if self.attempts else None
        return last if last is not None and last.status in (200, 202) else None


def price(version: int) -> int:
    return BASE_PRICE + version


def upsert(tenant: str, group: str, ref: str, version: int) -> dict[str, Any]:
    return crm.upsert(group, ref, version,
                      description=f"{tenant} {ref} v{version}: a bright two-room flat, "
                                  "renovated this year",
                      price={"amount": price(version), "currency": "EUR",
                             "period": "monthly"})


class Stream:
    """A tenant's CRM: posts an event every ``every_s`` in a thread until stopped. One event
    in three is a new listing (of group ``{tenant}-g{n % 3}``), the others bump the version of
    one of the six newest; an event that is not accepted (503, no answer) is posted again, same
    webhook-id and body, after ``retry_s`` or up to twice that (jitter, as CRMs do, so that
    several CRMs do not retry in step), before the next one. ``stop``
    lets the event in hand be accepted (within ``finish_s``)."""

    def __init__(self, url: str, tenant: str, every_s: float = 0.1, retry_s: float = 0.2,
                 finish_s: float = 20.0, lane: str = "") -> None:
        """``lane``: one of several CRMs of the tenant posting at once, each with listings
        of its own (``{tenant}-{lane}apt-N``) in the tenant's groups."""
        self.url, self.tenant, self.lane = url, tenant, lane
        self.name = f"{tenant}/{lane}" if lane else tenant
        self.every_s, self.retry_s, self.finish_s = every_s, retry_s, finish_s
        self.sent: list[Sent] = []
        self.attempts = 0  # started so far (read by other threads: a plain int)
        self.failure: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped_at = 0.0
        self._versions: dict[str, tuple[str, int]] = {}  # ref -> (group, last version)
        self._random = random.Random(f"{tenant}/{lane}")
        self._new: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"crm-{self.name}")

    def start(self) -> Stream:
        self._thread.start()
        return self

    def stop(self) -> list[Sent]:
        self._stopped_at = time.monotonic()
        self._stop.set()
        self._thread.join(timeout=self.finish_s + 30)
        assert not self._thread.is_alive(), f"{self.name}'s CRM did not stop"
        if self.failure is not None:
            raise AssertionError(f"{self.name}'s CRM failed") from self.failure
        return self.sent

    def snapshot(self) -> list[Sent]:
        with self._lock:
            return list(self.sent)

    def _next(self, n: int) -> Sent:
        if n % 3 == 0 or not self._new:
            ref = f"{self.tenant}-{self.lane}apt-{len(self._new)}"
            group = f"{self.tenant}-g{len(self._new) % 3}"
            self._new.append(ref)
            version = 1
        else:
            ref = self._new[-1 - n % min(6, len(self._new))]
            group, last = self._versions[ref]
            version = last + 1
        self._versions[ref] = (group, version)
        return Sent(f"{self.tenant}-{self.lane}{n}", group, ref, version)

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=30) as client:
                n = 0
                while not self._stop.is_set():
                    sent = self._next(n)
                    with self._lock:
                        self.sent.append(sent)
                    self._deliver(client, sent)
                    n += 1
                    self._stop.wait(self.every_s)
        except BaseException as exc:  # seen by stop()
            self.failure = exc

    def _deliver(self, client: httpx.Client, sent: Sent) -> None:
        body = orjson.dumps(upsert(self.tenant, sent.group, sent.ref, sent.version))
        while True:
            started = time.monotonic()
            self.attempts += 1
            try:
                response = client.post(f"/webhooks/crm/{self.tenant}", content=body,
                                       headers=crm.signed_headers(SECRET, body,
                                                                  sent.webhook_id))
                attempt = Attempt(started, time.monotonic(), response.status_code,
                                  response.headers.get("retry-after"), response.text[:300])
            except httpx.TransportError as exc:
                attempt = Attempt(started, time.monotonic(), 0, None, repr(exc))
            with self._lock:
                sent.attempts.append(attempt)
            if attempt.status in (200, 202):
                return
            if 400 <= attempt.status < 500:
                return  # an answer no CRM retries: the test reports it
            # 503, no answer, or another 5xx: a CRM retries them all (Standard Webhooks); the
            # test says which answers the contract allows.
            if self._stop.is_set() and time.monotonic() > self._stopped_at + self.finish_s:
                return
            time.sleep(self.retry_s * (1 + self._random.random()))


@contextlib.contextmanager
def streams(url: str, tenants: list[str], every_s: dict[str, float],
            lanes: dict[str, int] | None = None) -> Iterator[dict[str, Stream]]:
    """A running CRM per tenant, by tenant name, and its further ``lanes`` (``NAME/b``, ...);
    stopped on the way out (``stop`` may come first)."""
    running: dict[str, Stream] = {}
    for tenant in tenants:
        for i in range((lanes or {}).get(tenant, 1)):
            lane = "" if i == 0 else chr(ord("a") + i)
            stream = Stream(url, tenant, every_s=every_s.get(tenant, 0.2), lane=lane)
            running[stream.name] = stream.start()
    try:
        yield running
    finally:
        for stream in running.values():
            if stream._thread.is_alive():
                stream._stop.set()
        for stream in running.values():
            stream._thread.join(timeout=60)


# -- what the portals hold -----------------------------------------------------------------------

def latest(sent: list[Sent]) -> dict[str, tuple[str, int]]:
    """ref -> (group, version) of the newest accepted event of each listing."""
    out: dict[str, tuple[str, int]] = {}
    for s in sent:
        if s.accepted is not None and s.version >= out.get(s.ref, ("", 0))[1]:
            out[s.ref] = (s.group, s.version)
    return out


def portal_gaps(stack: Stack, wanted: dict[str, tuple[str, int]],
                exact: bool = True) -> list[str]:
    """Where the portals do not hold each listing's ``wanted`` version (Rentix: the listing
    by externalId; Travtus: the listing, live, in its group), or (``exact`` False) that
    version or a later one: one line each."""

    def fits(held: Any, version: int) -> bool:
        if held is None:
            return False
        return bool(held == price(version) if exact else held >= price(version))

    rentix = stack.rentix_listings()
    travtus_all = stack.sandbox.get("/_sandbox/travtus/listings").json()["listings"]
    travtus = {(item["group_external_ref"], item["external_reference"]): item
               for item in travtus_all}
    gaps = []
    for ref, (group, version) in sorted(wanted.items()):
        copy = rentix.get(ref)
        held = None if copy is None else copy["formData"].get("announcementValue")
        if not fits(held, version):
            gaps.append(f"rentix {ref}: holds {held}, want {price(version)}")
        synced = travtus.get((group, ref))
        rent = None if synced is None or synced.get("inactive_date") else \
            synced["lease_terms"][0]["rent"]
        if not fits(rent, version):
            gaps.append(f"travtus {group}/{ref}: holds {rent}, want {price(version)}")
    return gaps


def wait_on_portals(stack: Stack, wanted: dict[str, tuple[str, int]], timeout: float,
                    logs: Any = None, exact: bool = True) -> float:
    """Until both portals hold every listing of ``wanted`` at its version (``exact`` False:
    or a later one); how long it took. Fails with what is still missing (and ``logs()``, if
    given)."""
    started = time.monotonic()
    gaps: list[str] = []

    def done() -> bool:
        nonlocal gaps
        gaps = portal_gaps(stack, wanted, exact)
        if gaps and stack.workers and all(p.poll() is not None for p in stack.workers):
            raise AssertionError(f"every worker has exited, {len(gaps)} listing copies "
                                 f"behind: {gaps[:6]}")
        return not gaps

    wait_until(done, timeout=timeout, what=lambda: (
        f"{len(gaps)} listing copies to reach their latest version: {gaps[:12]}"
        + (f"\n{logs()}" if logs is not None else "")))
    return time.monotonic() - started


def reused_keys(stack: Stack) -> dict[str, list[Any]]:
    """Idempotency-Keys the portals saw with two different bodies (each a write whose body
    arrived whole): a key reused for another intent."""
    bodies: dict[str, list[Any]] = {}
    for request in stack.journal():
        key = request.get("idempotency_key")
        if key and not request["cut_off"] and request["method"] in ("PUT", "POST", "DELETE"):
            bodies.setdefault(key, []).append(request["body"])
    return {key: seen for key, seen in bodies.items() if any(b != seen[0] for b in seen)}


def worker_logs(stack: Stack, chars: int = 4000) -> str:
    """The tail of every worker's log, for a failure's message."""
    return "\n".join(f"--- worker {p.pid} (exit {p.poll()}):\n{stack.log_of(p)[-chars:]}"
                     for p in stack.workers)
