"""Fairness between tenants (issue 31, part 3): a small tenant's webhook-to-portal latency while a
big tenant loads 20,000 listings, against the small tenant's latency alone in the same run.

    python -m tests.bench.tenants [--big 20000] [--seconds 120] [--workers 2]
                                  [--per-snapshot 400] [--updates 2000] [--rate 5]

One bridge (``bridge serve`` and ``bridge worker`` x ``--workers`` on a fresh Redis) serves two
tenants, ``small`` and ``big`` (``[[tenants]]``), each with its own sandbox (a ``bridge
sandbox`` process of its own, at the documented Rentix limits of 300 requests/min and 30
bulk/min) and its own credentials, so that neither spends the other's rate budgets. The default
debounce (window 1 s, max_wait 10 s) and the harness's delivery settings.

1. small alone: ``--rate`` single-listing events a second (creates, then edits;
   bridge.dev.generate) over ``--groups`` groups x ``--per-group`` listings, for ``--seconds``;
   then until both its portals hold every final state.
2. small + big: the same trickle (newer versions, new prices), while big posts ``--big``
   listings as ``group.snapshot`` events of ``--per-snapshot`` listings (one new group each),
   each followed by a share of ``--updates`` ``listing.updated`` events of listings already
   posted, all as fast as the webhook takes them. The trickle runs for the whole load: until
   big's portals hold every final state of its listings (at least ``--seconds``, at most
   ``--big-timeout``).

Every event carries a price no other event of its tenant has, so the price a portal accepted
names the version (tests/bench/harness.py): an event's latency runs from its post to the answer
of the first write that gave its listing that version or a later one, read from the tenant's
sandbox journal as the run goes (``since``: new entries only). Printed: small's p50/p99/max per
portal in both phases (under the load, also for the events posted in its first minute, while
big's snapshots are folded and flushed), the aim (p99 with the big load at most
``max_wait_ms`` + 2 s above the p99 alone, per portal: PASS/FAIL), big's time to land its
listings on each portal, the 429s each sandbox answered, and what the bridge's queue looked
like meanwhile (arq's queue, small's groups due but not yet taken, how late).

Run by hand, not by the test suite (no ``test_`` prefix: pytest does not collect it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from bridge import constants as k
from bridge.constants import keyspace
from bridge.dev.embedded import free_port
from bridge.dev.generate import ListingFactory, event_stream
from bridge.dev.sender import SendReport
from tests.bench.harness import (
    BRIDGE,
    DEBOUNCE,
    DELIVERY,
    DOCUMENTED_LIMITS,
    Accepted,
    Calls,
    Latency,
    accepted_prices,
    default_targets,
    distinct_prices,
    latencies,
    percentile,
    post_timed,
    rentix_behind,
    snapshot_event,
    travtus_behind,
    up,
)
from tests.conftest import SECRET
from tests.support.servers import redis_server, wait_until

PORTALS = {"rentix": "Rentix", "travtus": "Travtus"}
SMALL, BIG = "small", "big"
SLACK_S = 2.0  # the aim: small's p99 under the load at most max_wait + this above alone
POLL_S = 2.0  # how often the sandboxes' journals (and the queue) are read
EARLY_S = 60.0  # small's latency is also shown for the events of the load's first minute
SLICE_S = 10.0  # the trickle is posted in slices this long (it stops between two)
BIG_PRICE_BASE = 1_000_000  # big's prices: above every price small's trickle uses
PHASE2_PRICE_BASE = 500_000  # small's second trickle: above its first's


# -- the deployment: processes, configuration, sandboxes --------------------------------------

def toml_table(header: str, values: dict[str, Any]) -> list[str]:
    return [header, *(f"{key} = {json.dumps(value)}" for key, value in values.items())]


def tenant_toml(name: str, targets: Sequence[dict[str, Any]], *, own_file: bool = False,
                **settings: Any) -> str:
    """A tenant, as a ``[[tenants]]`` entry of the main file, or (``own_file``) as a file of
    ``tenants_dir`` (the same shape, its keys at the top)."""
    head = {"name": name, "webhook_secrets": [SECRET], **settings}
    lines = ([f"{key} = {json.dumps(value)}" for key, value in head.items()] if own_file
             else toml_table("[[tenants]]", head))
    for target in targets:
        lines += toml_table("[[targets]]" if own_file else "[[tenants.targets]]", target)
    return "\n".join(lines) + "\n"


def bridge_toml(redis_url: str, tenants: Sequence[str] = (), tenants_dir: str | None = None,
                **sections: dict[str, Any]) -> str:
    """A configuration naming its tenants only (no default tenant): ``tenants`` are
    ``tenant_toml`` entries, ``sections`` the top-level tables ([debounce], [delivery], ...)."""
    lines = [f"redis_url = {json.dumps(redis_url)}"]
    if tenants_dir is not None:
        lines.append(f"tenants_dir = {json.dumps(tenants_dir)}")
    for name, values in sections.items():
        lines += toml_table(f"[{name}]", values)
    return "\n".join(lines) + "\n\n" + "\n".join(tenants)


def own_targets(sandbox_url: str, credentials: str) -> list[dict[str, Any]]:
    """The two default targets (harness.default_targets) on credentials of their own: a Rentix
    API key and a Travtus client that no other tenant calls with (they own the budgets)."""
    rentix, travtus = default_targets(sandbox_url, api_key=f"{credentials}-rentix-key")
    travtus.update(client_id=f"{credentials}-travtus", client_secret=f"{credentials}-secret")
    return [rentix, travtus]


def sandbox_command(port: int, credentials: str) -> list[str]:
    """``bridge sandbox`` accepting the credentials ``own_targets`` gives."""
    return ["sandbox", "--port", str(port), "--rentix-api-key", f"{credentials}-rentix-key",
            "--travtus-client-id", f"{credentials}-travtus",
            "--travtus-client-secret", f"{credentials}-secret"]


@contextlib.contextmanager
def processes(commands: dict[str, list[str]], logs: Path) -> Iterator[None]:
    """``bridge`` processes, each logging to ``logs/NAME.log``; stopped (SIGTERM, then
    SIGKILL after 20 s) on the way out, and the logs' tails printed if the block failed."""
    procs = []
    for name, args in commands.items():
        with (logs / f"{name}.log").open("wb") as log:  # the child keeps its own handle
            procs.append(subprocess.Popen([*BRIDGE, *args], stdout=subprocess.DEVNULL,
                                          stderr=log))
    try:
        yield
    except BaseException:
        for path in sorted(logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-20:]
            if tail:
                print("\n".join([f"--- {path.name}", *tail]), file=sys.stderr)
        raise
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def ready_sandbox(url: str, limits: dict[str, int] | None = None) -> Iterator[httpx.Client]:
    """The admin client of a started sandbox, its Rentix limits set (the documented ones)."""
    wait_until(lambda: up(f"{url}/_sandbox/journal"), timeout=30, what=f"sandbox at {url}")
    with httpx.Client(base_url=url, timeout=120) as client:
        wanted = limits or DOCUMENTED_LIMITS
        answer = client.post("/_sandbox/rate-limits", json=wanted).json()
        assert answer == {**answer, **wanted}, answer
        yield client


# -- the witness: a sandbox's journal, read as it grows -----------------------------------------

class Tracker:
    """Which version of each listing a portal holds, from the accepted writes: the price of a
    write names the event (prices are distinct within a tenant)."""

    def __init__(self) -> None:
        self.version_of: dict[float, int] = {}
        self.final: dict[str, int] = {}  # ref -> the version the portals must end with
        self.held: dict[str, dict[str, int]] = {p: {} for p in PORTALS}

    def expect(self, events: Sequence[dict[str, Any]], final: bool = True) -> None:
        """Know ``events``' prices; with ``final``, their listings' last versions are what
        the portals must hold (a later call's events take over)."""
        for event in events:
            for listing in event.get("listings") or [event["listing"]]:
                self.version_of[float(listing["price"]["amount"])] = listing["version"]
                if final:
                    ref = listing["external_ref"]
                    self.final[ref] = max(self.final.get(ref, -1), listing["version"])

    def saw(self, portal: str, accepted: Sequence[Accepted]) -> None:
        held = self.held[portal]
        for _, ref, price in accepted:
            version = (self.version_of.get(float(price)) if isinstance(price, int | float)
                       else None)
            if version is not None and ref is not None and version > held.get(ref, -1):
                held[ref] = version

    def behind(self, portal: str) -> int:
        held = self.held[portal]
        return sum(1 for ref, v in self.final.items() if held.get(ref, -1) < v)

    def landed(self) -> bool:
        return bool(self.final) and not any(self.behind(p) for p in PORTALS)


@dataclass
class Witness:
    """One tenant's sandbox: the accepted writes and the 429s, read from its journal."""

    client: httpx.Client
    tracker: Tracker = field(default_factory=Tracker)
    since: int = 0
    accepted: dict[str, list[Accepted]] = field(
        default_factory=lambda: {p: [] for p in PORTALS})
    rate_limited: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)

    def poll(self) -> None:
        answer = self.client.get("/_sandbox/journal", params={"since": self.since})
        entries = answer.json()["requests"]
        if not entries:
            return
        self.since = max(e["seq"] for e in entries)
        for portal, items in accepted_prices(entries).items():
            self.accepted[portal] += items
            self.tracker.saw(portal, items)
        self.rate_limited.update(Calls.of(entries).rate_limited)
        self.requests.update(e["portal"] for e in entries)


def landing_s(accepted: Sequence[Accepted], version_of: dict[float, int],
              final: dict[str, int], start: float) -> float | None:
    """From ``start`` until the portal first held every listing's final version (None: it
    never did)."""
    reached: dict[str, float] = {}
    for at, ref, price in sorted(accepted, key=lambda a: a[0]):
        version = version_of.get(float(price)) if isinstance(price, int | float) else None
        if (ref is not None and version is not None and ref in final and ref not in reached
                and version >= final[ref]):
            reached[ref] = at
    if len(reached) < len(final):
        return None
    return max(reached.values()) - start


# -- what the bridge's queue looked like --------------------------------------------------------

@dataclass
class Queue:
    """Samples, every poll, of arq's queue and of small's groups due but not taken yet."""

    queued: list[int] = field(default_factory=list)
    small_due: list[int] = field(default_factory=list)  # small's groups due now, untaken
    small_late_s: list[float] = field(default_factory=list)  # the oldest of them: how late
    big_due: list[int] = field(default_factory=list)
    big_senders: list[int] = field(default_factory=list)

    def sample(self, client: Redis) -> None:
        redis: Any = client  # redis-py's sync client, typed for both
        now = time.time() * 1000
        self.queued.append(int(redis.zcard(k.QUEUE)))
        small, big = keyspace(SMALL), keyspace(BIG)
        due = redis.zrangebyscore(small.DUE, "-inf", now, withscores=True)
        self.small_due.append(len(due))
        self.small_late_s.append(max(((now - s) / 1000 for _, s in due), default=0.0))
        self.big_due.append(int(redis.zcount(big.DUE, "-inf", now)))
        self.big_senders.append(int(redis.zcount(big.SENDERS, "-inf", now)))

    def lines(self) -> list[str]:
        if not self.queued:
            return []

        def most(values: Sequence[float]) -> str:
            return f"median {sorted(values)[len(values) // 2]:g}, max {max(values):g}"

        return [f"    arq's queue (jobs queued or running): {most(self.queued)}",
                f"    small's groups due and not yet taken: {most(self.small_due)}; the oldest "
                f"of them due for: {most([round(s, 1) for s in self.small_late_s])} s",
                f"    big's groups due: {most(self.big_due)}; big's outboxes due: "
                f"{most(self.big_senders)}"]


# -- the load ------------------------------------------------------------------------------------

def trickle(count: int, groups: int, per_group: int, price_base: int, seed: int,
            first_version: int) -> list[dict[str, Any]]:
    """Small's single-listing events, each with a price of its own."""
    events = list(event_stream(count, groups, per_group, seed=seed, first_version=first_version))
    return distinct_prices(events, base=price_base)


def big_load(listings: int, per_snapshot: int, updates: int, seed: int = 31
             ) -> list[dict[str, Any]]:
    """Big's events: a ``group.snapshot`` of ``per_snapshot`` new listings per group (one new
    group each) until ``listings`` are named, each followed by its share of ``updates``
    (``listing.updated`` of a listing already posted, version 2, 3, ...); prices distinct."""
    rng, factory = random.Random(seed), ListingFactory(seed)
    groups = -(-listings // per_snapshot)
    share, extra = divmod(updates, groups)
    price = BIG_PRICE_BASE
    posted: list[tuple[str, dict[str, Any]]] = []  # (group, listing as last posted)
    events: list[dict[str, Any]] = []
    for g in range(groups):
        group = f"big-{g:03d}"
        size = min(per_snapshot, listings - g * per_snapshot)
        snapshot = snapshot_event(group, size, seed=seed + g, price_base=price)
        price += size
        events.append(snapshot)
        posted += [(group, item) for item in snapshot["listings"]]
        for _ in range(share + (g < extra)):
            n = rng.randrange(len(posted))
            group_of, listing = posted[n]
            edited = factory.edit(listing)
            edited["price"] = {**edited["price"], "amount": price}
            price += 1
            posted[n] = (group_of, edited)
            events.append({"type": "listing.updated", "occurred_at": snapshot["occurred_at"],
                           "group": group_of, "listing": edited})
    return events


@dataclass
class Posted:
    """What a poster thread sent: the events, when each was sent, the answers."""

    events: list[dict[str, Any]] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    def add(self, events: Sequence[dict[str, Any]], report: SendReport,
            sent_at: Sequence[float]) -> None:
        self.events += events
        self.sent_at += sent_at
        self.statuses.update(report.statuses)
        self.errors.update(report.errors)
        self.elapsed_s += report.elapsed_s

    def answers(self) -> str:
        seen = {**{str(s): n for s, n in sorted(self.statuses.items())}, **self.errors}
        return ", ".join(f"{n} x {s}" for s, n in seen.items()) or "none"


def post_trickle(url: str, events: Sequence[dict[str, Any]], rate: float, posted: Posted,
                 stop: threading.Event, at_least_s: float) -> None:
    """Post ``events`` at ``rate``/s in slices of SLICE_S (harness.post_timed paces each), until
    ``at_least_s`` have passed and ``stop`` is set, or the events run out."""
    started, size = time.monotonic(), max(1, int(rate * SLICE_S))
    for first in range(0, len(events), size):
        if time.monotonic() - started >= at_least_s and stop.is_set():
            return
        part = events[first:first + size]
        report, sent_at = post_timed(url, part, rate=rate, concurrency=2)
        posted.add(part, report, sent_at)


# -- the phases ------------------------------------------------------------------------------------

@dataclass
class Phase:
    name: str
    posted: Posted
    latency: dict[str, list[Latency]]
    drained_s: float | None  # after the trickle's last post, until both portals held it all
    queue: Queue
    load_started: float | None = None  # when big's load began (wall clock), if it ran

    def early(self, portal: str) -> list[Latency]:
        """The latencies of the events posted in the load's first EARLY_S."""
        if self.load_started is None:
            return []
        end = self.load_started + EARLY_S
        return [value for value, sent in zip(self.latency[portal], self.posted.sent_at,
                                             strict=True) if sent <= end]


@dataclass
class BigLoad:
    posted: Posted
    listings: int
    landed_s: dict[str, float | None]  # per portal, from its first post
    behind: dict[str, int]  # listings a portal lacked at the end (a full read)


@dataclass
class Deployment:
    web_url: str
    redis: Redis
    small: Witness
    big: Witness


def run_phase(name: str, bench: Deployment, events: list[dict[str, Any]], args: argparse.Namespace,
              big_events: list[dict[str, Any]] | None = None) -> tuple[Phase, BigLoad | None]:
    """Small's trickle (with big's load alongside, if given: then for as long as the load) and
    then until both of small's portals hold the trickle's final states."""
    small, big = bench.small, bench.big
    small.tracker.final.clear()  # set once the trickle has ended (what it sent)
    small.tracker.expect(events, final=False)
    stop, trickled, loaded = threading.Event(), Posted(), Posted()
    webhook = f"{bench.web_url}/webhooks/crm"
    poster = threading.Thread(target=post_trickle, args=(
        f"{webhook}/{SMALL}", events, args.rate, trickled, stop, args.seconds))
    threads = [poster]
    if big_events is None:
        stop.set()  # alone: the trickle lasts --seconds
    else:
        big.tracker.expect(big_events)

        def load() -> None:
            report, sent_at = post_timed(f"{webhook}/{BIG}", big_events, concurrency=8)
            loaded.add(big_events, report, sent_at)

        threads.append(threading.Thread(target=load))
    queue = Queue()
    started = time.time()
    for thread in threads:
        thread.start()
    big_done, trickle_end = big_events is None, None
    while True:
        time.sleep(POLL_S)
        small.poll()
        queue.sample(bench.redis)
        if not big_done:
            big.poll()
            big_done = big.tracker.landed() or time.time() > started + args.big_timeout
            if big_done:
                stop.set()  # the trickle ends with its slice
        if trickle_end is None and not poster.is_alive():
            small.tracker.expect(trickled.events)  # what it sent: their finals are the aim
            trickle_end = max(trickled.sent_at)
        if trickle_end is not None and (small.tracker.landed()
                                        or time.time() > trickle_end + args.drain_s):
            break
    for thread in threads:
        thread.join()
    ended = time.time()
    small.poll()
    assert trickle_end is not None
    tracker = small.tracker
    drained = [landing_s(small.accepted[p], tracker.version_of, tracker.final, trickle_end)
               for p in PORTALS]
    phase = Phase(name, trickled,
                  {p: latencies(trickled.events, trickled.sent_at, small.accepted[p], ended)
                   for p in PORTALS},
                  None if None in drained else max(d for d in drained if d is not None), queue,
                  None if big_events is None else started)
    if big_events is None:
        return phase, None
    big.poll()
    first = min(loaded.sent_at) if loaded.sent_at else started
    tracker = big.tracker
    landed = {p: landing_s(big.accepted[p], tracker.version_of, tracker.final, first)
              for p in PORTALS}
    finals: dict[str, dict[str, Any]] = {}
    for event in big_events:
        for listing in event.get("listings") or [event["listing"]]:
            ref = listing["external_ref"]
            if listing["version"] >= finals.get(ref, {}).get("version", -1):
                finals[ref] = listing
    groups = sorted({e["group"] for e in big_events})
    behind = {"rentix": len(rentix_behind(big.client, finals)),
              "travtus": len(travtus_behind(big.client, finals, groups))}
    return phase, BigLoad(loaded, len(finals), landed, behind)


@contextlib.contextmanager
def deployment(args: argparse.Namespace) -> Iterator[Deployment]:
    ports = {name: free_port() for name in ("web", SMALL, BIG)}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    debounce = {"window_ms": args.window_ms, "max_wait_ms": args.max_wait_ms}
    with redis_server() as server, tempfile.TemporaryDirectory(prefix="lb-bench-") as tmp:
        config = Path(tmp) / "bridge.toml"
        config.write_text(bridge_toml(
            server.url, [tenant_toml(t, own_targets(urls[t], t)) for t in (SMALL, BIG)],
            webhook={"max_body_bytes": 64 * 1024 * 1024}, debounce=debounce,
            delivery=DELIVERY))
        commands = {
            **{f"sandbox-{t}": sandbox_command(ports[t], t) for t in (SMALL, BIG)},
            "serve": ["serve", "--config", str(config), "--port", str(ports["web"])],
            **{f"worker{n}": ["worker", "--config", str(config)] for n in range(args.workers)},
        }
        with processes(commands, Path(tmp)), Redis.from_url(server.url) as redis:
            wait_until(lambda: up(f"{urls['web']}/healthz"), timeout=30, what="bridge serve")
            with ready_sandbox(urls[SMALL]) as small, ready_sandbox(urls[BIG]) as big:
                yield Deployment(urls["web"], redis, Witness(small), Witness(big))


# -- the report ------------------------------------------------------------------------------------

def figure(value: Latency | None) -> str:
    if value is None:
        return "-"
    return f"{value.seconds:.1f} s" if value.exact else f"> {value.seconds:.0f} s"


def slowest(values: Sequence[Latency]) -> Latency | None:
    return max(values, key=lambda v: v.seconds) if values else None


def describe(phase: Phase, rate: float) -> list[str]:
    posted = phase.posted
    drained = (f"both portals held every final state {phase.drained_s:.1f} s after its last "
               "post" if phase.drained_s is not None else "NOT all held when the run stopped")
    out = [f"{phase.name}: small posted {len(posted.events)} events at {rate:g}/s "
           f"({posted.answers()}); {drained}",
           f"    {'small':8} {'p50':>9} {'p99':>9} {'max':>9}"]
    rows: list[tuple[str | None, dict[str, list[Latency]]]] = [(None, phase.latency)]
    if phase.load_started is not None:
        early = {p: phase.early(p) for p in PORTALS}
        rows.append((f"    of which the {len(early['rentix'])} events posted in the load's first "
                     f"{EARLY_S:g} s (big's snapshots folded and flushed):", early))
    for header, latency in rows:
        out += [header] if header else []
        for portal, label in PORTALS.items():
            values = latency[portal]
            out.append(f"    {label:8} {figure(percentile(values, 0.5)):>9} "
                       f"{figure(percentile(values, 0.99)):>9} {figure(slowest(values)):>9}")
    return out + phase.queue.lines()


def verdicts(alone: Phase, loaded: Phase, max_wait_s: float) -> list[str]:
    allowed = max_wait_s + SLACK_S
    out = []
    for portal, label in PORTALS.items():
        before = percentile(alone.latency[portal], 0.99)
        after = percentile(loaded.latency[portal], 0.99)
        if before is None or after is None:
            out.append(f"{label}: not measured")
            continue
        worse = after.seconds - before.seconds
        verdict = ("PASS" if worse <= allowed and after.exact else
                   "FAIL" if worse > allowed else "not known (events never accepted)")
        out.append(f"small's {label} p99: {figure(before)} alone, {figure(after)} with the big "
                   f"load: {worse:+.1f} s (aim: at most +{allowed:g} s = max_wait "
                   f"{max_wait_s:g} s + {SLACK_S:g} s): {verdict}")
    return out


def describe_big(load: BigLoad) -> list[str]:
    posted = load.posted
    snapshots = sum(e["type"] == "group.snapshot" for e in posted.events)
    landed = ", ".join(
        f"{label} {load.landed_s[p]:.1f} s" if load.landed_s[p] is not None
        else f"{label} NOT within the run ({load.behind[p]} listings behind at the end)"
        for p, label in PORTALS.items())
    both = [s for s in load.landed_s.values() if s is not None]
    whole = (f"; all of it on both: {max(both):.1f} s" if len(both) == len(PORTALS) else "")
    return [f"big: {load.listings} listings in {snapshots} snapshots + "
            f"{len(posted.events) - snapshots} listing updates, posted in {posted.elapsed_s:.1f} s "
            f"({posted.answers()})",
            f"    landed (from its first post until the portal held every final state): "
            f"{landed}{whole}",
            f"    a full read at the end: Rentix lacked {load.behind['rentix']}, Travtus "
            f"{load.behind['travtus']}"]


def describe_429s(bench: Deployment) -> str:
    parts = []
    for tenant, witness in ((SMALL, bench.small), (BIG, bench.big)):
        counts = ", ".join(f"{label} {witness.rate_limited.get(p, 0)} of "
                           f"{witness.requests.get(p, 0)} requests"
                           for p, label in PORTALS.items())
        parts.append(f"{tenant}: {counts}")
    return "429s answered: " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=int, default=20_000, help="big's listings")
    parser.add_argument("--per-snapshot", type=int, default=400,
                        help="listings per big snapshot (one new group each)")
    parser.add_argument("--updates", type=int, default=2_000,
                        help="big's listing.updated events among its snapshots")
    parser.add_argument("--seconds", type=float, default=120,
                        help="small's trickle alone; with the big load, at least this long")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=5.0, help="small's events a second")
    parser.add_argument("--groups", type=int, default=4, help="small's groups")
    parser.add_argument("--per-group", type=int, default=25, help="small's listings a group")
    parser.add_argument("--window-ms", type=int, default=DEBOUNCE["window_ms"])
    parser.add_argument("--max-wait-ms", type=int, default=DEBOUNCE["max_wait_ms"])
    parser.add_argument("--big-timeout", type=float, default=1800,
                        help="longest the big load is followed")
    parser.add_argument("--drain-s", type=float, default=300,
                        help="longest wait for small's portals after its last post")
    args = parser.parse_args()
    alone_events = trickle(int(args.rate * args.seconds), args.groups, args.per_group,
                           price_base=300, seed=1, first_version=1)
    # The loaded trickle may outlast --seconds (it runs as long as the load): events for the
    # longest it may run, posted until it stops.
    longest = args.rate * (args.big_timeout + SLICE_S)
    loaded_events = trickle(int(longest), args.groups, args.per_group,
                            price_base=PHASE2_PRICE_BASE, seed=2,
                            first_version=len(alone_events) + 1)
    big_events = big_load(args.big, args.per_snapshot, args.updates)
    with deployment(args) as bench:
        started = time.monotonic()
        alone, _ = run_phase("phase 1, small alone", bench, alone_events, args)
        print(f"[phase 1: {time.monotonic() - started:.0f} s]", flush=True)
        started = time.monotonic()
        loaded, big = run_phase("phase 2, small + big", bench, loaded_events, args, big_events)
        print(f"[phase 2: {time.monotonic() - started:.0f} s]", flush=True)
        assert big is not None
        max_wait_s = args.max_wait_ms / 1000
        print(f"\nFairness between tenants: {args.workers} workers; each tenant on a sandbox "
              f"and credentials of its own (Rentix at {DOCUMENTED_LIMITS['rentix_per_minute']} "
              f"requests/min, {DOCUMENTED_LIMITS['rentix_bulk_per_minute']} bulk/min); "
              f"debounce window {args.window_ms} ms, max_wait {args.max_wait_ms} ms; small: "
              f"{args.rate:g} events/s over {args.groups} groups x {args.per_group} listings")
        for phase in (alone, loaded):
            print("\n".join(describe(phase, args.rate)))
        print("\n".join(describe_big(big)))
        print(describe_429s(bench))
        print("\n".join(verdicts(alone, loaded, max_wait_s)))


if __name__ == "__main__":
    main()
