"""Shared parts of the whole-bridge benchmarks (coalescing, backlog, latency).

``running_bridge`` starts the bridge as separate processes (``bridge sandbox``, ``bridge serve``,
``bridge worker`` x n, a real Redis from tests.support.servers), sets the sandbox's Rentix limits
through its admin API (the documented 300/min and 30 bulk/min unless told otherwise) and stops it
all afterwards. The sandbox is the witness: what reached a portal, and when, is read from its
listings and its journal (``at`` is a request's arrival, ``duration_ms`` its answer's delay).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import itertools
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from bridge.dev.embedded import free_port
from bridge.dev.generate import ListingFactory
from bridge.dev.sender import SendReport, signed_request
from bridge.settings import RentixTarget
from tests.conftest import SECRET
from tests.support.servers import redis_server, wait_until
from tests.support.stack import stack_config

BRIDGE = [sys.executable, "-m", "bridge.cli"]
DOCUMENTED_LIMITS = {"rentix_per_minute": 300, "rentix_bulk_per_minute": 30}
BULK_MAX_OPS = 100  # operations per POST /listings/bulk (reference/rentix-api.md)
PUT_PER_MINUTE = 280  # the Rentix target's requests_per_minute default
BULK_PER_MINUTE = 28  # its bulk_per_minute default
DEBOUNCE = {"window_ms": 1000, "max_wait_ms": 10_000}  # the settings' defaults
DELIVERY = {"job_timeout_s": 60, "poll_interval_ms": 50}


def rentix_has(setting: str) -> bool:
    """Whether the Rentix target knows ``setting`` (a benchmark passes a newer setting only
    to a bridge that has it)."""
    return setting in RentixTarget.model_fields


def default_targets(sandbox_url: str, **rentix: Any) -> list[dict[str, Any]]:
    """The two default targets (as tests.support.stack writes them), the Rentix one with
    ``rentix``'s settings added."""
    return [
        {"name": "rentix", "kind": "rentix", "base_url": f"{sandbox_url}/rentix/api/v1",
         "api_key": "sandbox", "requests_per_minute": PUT_PER_MINUTE, **rentix},
        {"name": "travtus", "kind": "travtus", "base_url": f"{sandbox_url}/travtus",
         "token_url": f"{sandbox_url}/travtus/oauth2/token", "client_id": "sandbox",
         "client_secret": "sandbox"},
    ]


def up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


@dataclass
class BenchBridge:
    web_url: str
    sandbox_url: str
    config: Path
    logs: Path
    sandbox: httpx.Client

    @property
    def webhook_url(self) -> str:
        return f"{self.web_url}/webhooks/crm"

    def journal(self, portal: str | None = None) -> list[dict[str, Any]]:
        params = {"portal": portal} if portal else {}
        return list(self.sandbox.get("/_sandbox/journal", params=params).json()["requests"])

    def metrics(self) -> str:
        return httpx.get(f"{self.web_url}/metrics", timeout=30).text

    def status(self) -> str:
        return subprocess.run([*BRIDGE, "status", "--config", str(self.config)],
                              capture_output=True, text=True).stdout

    def log_tail(self, lines: int = 20) -> str:
        """The last lines each process wrote to stderr: what to read when a run goes wrong."""
        out = []
        for path in sorted(self.logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                out += [f"--- {path.name}", *tail]
        return "\n".join(out)


@contextlib.contextmanager
def running_bridge(*, workers: int = 2, limits: dict[str, int] | None = None,
                   rentix_per_minute: int | None = None, bulk_per_minute: int | None = None,
                   debounce: dict[str, Any] | None = None,
                   delivery: dict[str, Any] | None = None,
                   rentix: dict[str, Any] | None = None,
                   webhook: dict[str, Any] | None = None) -> Iterator[BenchBridge]:
    """A fresh bridge on a fresh Redis and sandbox; ``bulk_per_minute`` None keeps the default.
    ``rentix``: more settings of the Rentix target (say ``put_lane``); ``webhook``: of the
    webhook section (say ``max_body_bytes`` for a large snapshot)."""
    web_port, sandbox_port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    with redis_server() as redis, tempfile.TemporaryDirectory(prefix="lb-bench-") as tmp:
        config, logs = Path(tmp) / "bridge.toml", Path(tmp)
        sections: dict[str, Any] = {"debounce": debounce or DEBOUNCE,
                                    "delivery": delivery or DELIVERY}
        if webhook:
            sections["webhook"] = webhook
        if rentix:
            sections["targets"] = default_targets(sandbox_url, **{
                "requests_per_minute": rentix_per_minute or PUT_PER_MINUTE,
                **({} if bulk_per_minute is None else {"bulk_per_minute": bulk_per_minute}),
                **rentix})
        config.write_text(stack_config(
            redis.url, sandbox_url, rentix_per_minute, bulk_per_minute=bulk_per_minute,
            **sections))
        commands = {
            "sandbox": ["sandbox", "--port", str(sandbox_port)],
            "serve": ["serve", "--config", str(config), "--port", str(web_port)],
            **{f"worker{n}": ["worker", "--config", str(config)] for n in range(workers)},
        }
        procs = []
        for name, args in commands.items():
            with (logs / f"{name}.log").open("wb") as log:  # the child keeps its own handle
                procs.append(subprocess.Popen([*BRIDGE, *args], stdout=subprocess.DEVNULL,
                                              stderr=log))
        try:
            wait_until(lambda: up(f"http://127.0.0.1:{web_port}/healthz"), timeout=30,
                       what="bridge serve")
            wait_until(lambda: up(f"{sandbox_url}/_sandbox/journal"), timeout=30,
                       what="bridge sandbox")
            with httpx.Client(base_url=sandbox_url, timeout=60) as sandbox:
                wanted = limits or DOCUMENTED_LIMITS
                answer = sandbox.post("/_sandbox/rate-limits", json=wanted).json()
                assert answer == {**answer, **wanted}, answer
                bench = BenchBridge(f"http://127.0.0.1:{web_port}", sandbox_url, config, logs,
                                    sandbox)
                try:
                    yield bench
                except BaseException:
                    print(bench.log_tail(), file=sys.stderr)
                    raise
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def wait_for(predicate: Any, timeout: float, interval: float = 1.0) -> bool:
    """Poll ``predicate`` every ``interval`` s (each poll reads every listing: not too often);
    False once ``timeout`` has passed, so a benchmark can report a run that did not finish."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)  # a poll interval bounded by the deadline above
    return True


# -- the stream and what the portals hold ---------------------------------------------------------

def final_state(events: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["listing"]["external_ref"]: e["listing"] for e in events}


def groups_of(events: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({e["group"] for e in events})


def rentix_forms(sandbox: httpx.Client) -> dict[str, dict[str, Any]]:
    items = sandbox.get("/_sandbox/rentix/listings").json()["items"]
    return {i["externalId"]: i["formData"] for i in items if i.get("externalId")}


def travtus_rents(sandbox: httpx.Client, groups: Iterable[str]) -> dict[str, Any]:
    rents: dict[str, Any] = {}
    for group in groups:
        for item in sandbox.get("/_sandbox/travtus/listings",
                                params={"group": group}).json()["listings"]:
            rents[item["external_reference"]] = item["lease_terms"][0]["rent"]
    return rents


def rentix_behind(sandbox: httpx.Client, finals: dict[str, dict[str, Any]]) -> list[str]:
    """Listings whose final price (and so final version, prices being distinct) Rentix lacks."""
    forms = rentix_forms(sandbox)
    return [ref for ref, listing in finals.items()
            if (forms.get(ref) or {}).get("announcementValue") != float(listing["price"]["amount"])]


def travtus_behind(sandbox: httpx.Client, finals: dict[str, dict[str, Any]],
                   groups: Iterable[str]) -> list[str]:
    rents = travtus_rents(sandbox, groups)
    return [ref for ref, listing in finals.items()
            if rents.get(ref) != float(listing["price"]["amount"])]


def delivered(sandbox: httpx.Client, finals: dict[str, dict[str, Any]],
              groups: list[str]) -> bool:
    return not rentix_behind(sandbox, finals) and not travtus_behind(sandbox, finals, groups)


def snapshot_event(group: str, listings: int, seed: int = 7,
                   price_base: int | None = None) -> dict[str, Any]:
    """A ``group.snapshot`` naming ``listings`` new listings (refs ``{group}-00000``, ...);
    ``price_base``: give them the prices base, base + 1, ... (no stream's event has them)."""
    factory = ListingFactory(seed)
    items = [factory.listing(f"{group}-{n:05d}") for n in range(listings)]
    if price_base is not None:
        items = [{**item, "price": {**item["price"], "amount": price_base + n}}
                 for n, item in enumerate(items)]
    occurred = dt.datetime.now(tz=dt.UTC).isoformat().replace("+00:00", "Z")
    return {"type": "group.snapshot", "occurred_at": occurred, "group": group,
            "listings": items}


def post_one(url: str, event: dict[str, Any], timeout: float = 120) -> tuple[int, float]:
    """Post one (large) event, signed; its status and the wall-clock time it was sent."""
    body, headers = signed_request(SECRET, orjson.dumps(event))
    sent = time.time()
    answer = httpx.post(url, content=body, headers=headers, timeout=timeout)
    return answer.status_code, sent


# -- the journal: calls made, and when each write was accepted ------------------------------------

@dataclass
class Calls:
    """Portal requests by kind, counted from the sandbox's journal."""

    rentix_puts: int = 0
    rentix_bulks: int = 0
    bulk_ops: int = 0
    travtus_syncs: int = 0
    reads: int = 0
    rate_limited: dict[str, int] = field(default_factory=lambda: {"rentix": 0, "travtus": 0})

    @classmethod
    def of(cls, journal: Iterable[dict[str, Any]]) -> Calls:
        calls = cls()
        for r in journal:
            if r["status"] == 429:
                calls.rate_limited[r["portal"]] = calls.rate_limited.get(r["portal"], 0) + 1
            if is_bulk(r):
                calls.rentix_bulks += 1
                calls.bulk_ops += len(_operations(r))
            elif r["portal"] == "rentix" and r["method"] == "PUT":
                calls.rentix_puts += 1
            elif r["portal"] == "travtus" and r["path"].startswith("/listing/sync"):
                calls.travtus_syncs += 1
            else:
                calls.reads += 1
        return calls

    @property
    def writes(self) -> int:
        return self.rentix_puts + self.rentix_bulks + self.travtus_syncs

    def lines(self, events: int) -> list[str]:
        """The bridge's writes beside a relay making one call per event and portal."""
        bulk = (f" + {self.rentix_bulks} Rentix bulks ({self.bulk_ops} operations)"
                if self.rentix_bulks else "")
        relay = events * 2
        return [
            f"bridge: {self.rentix_puts} Rentix PUTs{bulk} + {self.travtus_syncs} Travtus syncs "
            f"= {self.writes} writes (+{self.reads} token and find reads)",
            f"one-call-per-event relay: {relay} writes; the bridge made "
            f"{self.writes / relay:.1%} of them ({relay / max(self.writes, 1):.1f}x fewer)",
        ]


def is_bulk(entry: dict[str, Any]) -> bool:
    return bool(entry["portal"] == "rentix" and entry["method"] == "POST"
                and entry["path"].rstrip("/").endswith("/listings/bulk"))


def _operations(entry: dict[str, Any]) -> list[dict[str, Any]]:
    body = entry.get("body")
    ops = body.get("operations") if isinstance(body, dict) else None
    return [op for op in ops or [] if isinstance(op, dict)]


def arrived_at(entry: dict[str, Any]) -> float:
    """Wall-clock time (s) the request reached the sandbox."""
    return dt.datetime.fromisoformat(entry["at"].replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class BudgetUse:
    """Rentix requests the sandbox counted against its budgets (every answer but a 429)."""

    span_s: float  # the window: from ``start`` to the last Rentix request (or ``end``)
    general_per_minute: float  # mean over the window
    bulk_per_minute: float
    general_peak: int  # the most in any 60 s
    bulk_peak: int

    @classmethod
    def of(cls, journal: Iterable[dict[str, Any]], start: float,
           end: float | None = None) -> BudgetUse:
        counted = [r for r in journal if r["portal"] == "rentix" and r["status"] != 429]
        general = sorted(arrived_at(r) for r in counted)
        bulk = sorted(arrived_at(r) for r in counted if is_bulk(r))
        last = end if end is not None else max(general, default=start)
        span = max(last - start, 1e-9)

        def mean(times: list[float]) -> float:
            return sum(start <= t <= last for t in times) / span * 60

        return cls(span, mean(general), mean(bulk), _peak(general), _peak(bulk))


def _peak(times: list[float], window: float = 60.0) -> int:
    """The most of ``times`` (sorted) within any ``window`` seconds."""
    most, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def answered_at(entry: dict[str, Any]) -> float:
    """Wall-clock time (s) the sandbox answered: arrival plus the answer's delay."""
    return float(arrived_at(entry) + entry["duration_ms"] / 1000)


Accepted = tuple[float, str | None, Any]  # answered at, listing ref, price


def accepted_prices(journal: Iterable[dict[str, Any]]) -> dict[str, list[Accepted]]:
    """Per portal, (answered at, listing ref, price) of every listing a 2xx write carried.

    A bulk's 200 is taken for each of its upserts (the journal does not keep per-operation
    results); the benchmarks check afterwards that the final states are held."""
    out: dict[str, list[Accepted]] = {"rentix": [], "travtus": []}
    for r in journal:
        if not 200 <= r["status"] < 300 or not isinstance(r.get("body"), dict):
            continue
        at, body = answered_at(r), r["body"]
        if r["portal"] == "rentix" and r["method"] == "PUT":
            out["rentix"].append((at, body.get("externalId"), body.get("announcementValue")))
        elif is_bulk(r):
            out["rentix"] += [(at, op.get("externalId"), op.get("announcementValue"))
                              for op in _operations(r) if op.get("op") == "upsert"]
        elif r["portal"] == "travtus" and r["path"].startswith("/listing/sync"):
            for item in body.get("listings") or []:
                terms = item.get("lease_terms") or [{}]
                out["travtus"].append((at, item.get("external_reference"), terms[0].get("rent")))
    return out


# -- posting with each event's send time ----------------------------------------------------------

class _Connection:
    """One keep-alive HTTP/1.1 connection, written by hand: httpx costs the sender a few hundred
    microseconds of CPU a request, which on a small machine caps the stream well below 500/s."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path or "/"
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(f"POST {self.path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
                     f"content-length: {len(body)}\r\n{head}\r\n".encode() + body)
        status = int((await reader.readline()).split()[1])
        length, close = 0, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            length = int(value) if name == b"content-length" else length
            close = close or (name == b"connection" and value.strip().lower() == b"close")
        await reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def _post_timed(url: str, bodies: Sequence[bytes], rate: float | None,
                      concurrency: int) -> tuple[SendReport, list[float]]:
    report, sent_at = SendReport(), [0.0] * len(bodies)
    numbers = itertools.count()  # each sender takes the next event, due at n / rate
    started = time.perf_counter()

    async def sender() -> None:
        connection = _Connection(url)
        while (n := next(numbers)) < len(bodies):
            if rate:  # pacing the stream, not waiting on a result
                await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            body, headers = signed_request(SECRET, bodies[n])
            sent_at[n] = time.time()
            try:
                report.statuses[await connection.post(body, headers)] += 1
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                report.errors[type(exc).__name__] += 1
                connection.close()
        connection.close()

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    report.elapsed_s = time.perf_counter() - started
    return report, sent_at


def post_timed(url: str, events: Sequence[Any], rate: float | None = None,
               concurrency: int = 16) -> tuple[SendReport, list[float]]:
    """Post every event, signed as it goes (at most ``rate``/s), with the wall-clock time each
    was sent."""
    bodies = [orjson.dumps(event) for event in events]
    return asyncio.run(_post_timed(url, bodies, rate, concurrency))


# -- latency: from an event's post to its portal first holding that version or a later one --------

def distinct_prices(events: list[dict[str, Any]], base: int = 300) -> list[dict[str, Any]]:
    """The events with a price each no other event has, so a price names its event's version."""
    out = []
    for n, event in enumerate(events):
        listing = event["listing"]
        price = {**listing["price"], "amount": base + n}
        out.append({**event, "listing": {**listing, "price": price}})
    return out


@dataclass(frozen=True)
class Latency:
    seconds: float
    exact: bool  # False: never accepted in the run, and ``seconds`` is its lower bound


def latencies(events: Sequence[dict[str, Any]], sent_at: Sequence[float],
              accepted: Iterable[Accepted], ended: float) -> list[Latency]:
    """Per event, the time until its listing was accepted at its version or later; an event
    never accepted before ``ended`` (wall clock) took at least until then."""
    version_of = {float(e["listing"]["price"]["amount"]): e["listing"]["version"] for e in events}
    held: dict[str, list[tuple[float, int]]] = {}
    for at, ref, price in sorted(accepted, key=lambda a: a[0]):
        version = version_of.get(float(price)) if isinstance(price, int | float) else None
        if version is None or ref is None:
            continue
        steps = held.setdefault(ref, [])
        if not steps or version > steps[-1][1]:
            steps.append((at, version))  # the highest version held so far only grows
    out = []
    for event, sent in zip(events, sent_at, strict=True):
        steps = held.get(event["listing"]["external_ref"], [])
        i = bisect.bisect_left([v for _, v in steps], event["listing"]["version"])
        out.append(Latency(steps[i][0] - sent, True) if i < len(steps)
                   else Latency(ended - sent, False))
    return out


def percentile(values: Sequence[Latency], q: float) -> Latency | None:
    """The q-quantile; inexact (a lower bound) unless it is an accepted event's latency and
    every event never accepted has a bound above it (then none can rank below it)."""
    if not values:
        return None
    ordered = sorted(values, key=lambda v: v.seconds)
    found = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    exact = found.exact and all(v.exact or v.seconds > found.seconds for v in values)
    return Latency(found.seconds, exact)


def histogram_bound(metrics: str, name: str, target: str, q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile of a /metrics histogram for
    ``target`` (None: no observations; inf: beyond the last bound)."""
    buckets = []
    for labels, value in re.findall(rf"^{name}_bucket{{([^}}]*)}} (\S+)$", metrics, re.M):
        label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if label.get("target") == target:
            buckets.append((float(label["le"]), float(value)))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    wanted = q * buckets[-1][1]
    return next(le for le, n in buckets if n >= wanted)
