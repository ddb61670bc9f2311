"""What idle tenants cost a worker (issue 31, part 3): its Redis commands a second with 1 idle
tenant configured, against 1,000, in the same run.

    python -m tests.bench.idle_tenants [--tenants 1000] [--seconds 60] [--warmup 20]
                                       [--workers 1]

For each count (1, then ``--tenants``): a fresh Redis-compatible server of the benchmark's own
(tests.support.servers, nothing else connected to it), a configuration naming its tenants in
``tenants_dir`` (one file per tenant, each with its own Rentix and Travtus targets on
credentials of their own, pointing at one ``bridge sandbox`` that is never called: its journal
is read at the end to show it) and the settings' defaults otherwise (the scheduler ticks every
``[delivery] poll_interval_ms``, 100 ms; reconciliation on, once a day), and ``--workers``
``bridge worker`` processes (no web process, no event). Every tenant takes one turn at a
worker's start; once none is due (``lb:wake``) and ``--warmup`` seconds more have passed,
``INFO commandstats`` is read, again ``--seconds`` later, and the difference in calls (every
command the server ran, those run by scripts included, less the benchmark's own INFO) is the
worker's load. Printed: both rates, their ratio against the aim (at most +10 %: PASS/FAIL), the
top 5 commands of each and, when the aim is missed, the commands that grew.

Run by hand, not by the test suite (no ``test_`` prefix: pytest does not collect it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis

from bridge import constants as k
from bridge.dev.embedded import free_port
from tests.bench.tenants import (
    bridge_toml,
    own_targets,
    processes,
    ready_sandbox,
    sandbox_command,
    tenant_toml,
)
from tests.support.servers import redis_server, wait_until
from workers.scheduler import TURN_LEASE_MS

AIM = 1.10  # 1,000 idle tenants: at most 10 % more commands a second than 1
SLICE_S = 10.0  # the window is read in slices this long too (to see that it is steady)


@dataclass
class Reading:
    tenants: int
    started_s: float  # from the workers' start until no tenant's turn was due
    seconds: float
    calls: Counter[str]  # command -> calls over the window
    slices: list[float]  # commands a second in each SLICE_S of it

    @property
    def rate(self) -> float:
        return sum(self.calls.values()) / self.seconds


def commandstats(redis: Any) -> Counter[str]:
    """Calls per command since the server started (``INFO commandstats``)."""
    info = redis.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(stats["calls"])
                    for name, stats in info.items()})


def measure(tenants: int, sandbox_url: str, args: argparse.Namespace, logs: Path) -> Reading:
    with redis_server() as server, tempfile.TemporaryDirectory(prefix="lb-idle-",
                                                                dir=logs) as tmp:
        directory = Path(tmp) / "tenants.d"
        directory.mkdir()
        for n in range(tenants):
            name = f"idle-{n:04d}"
            (directory / f"{name}.toml").write_text(
                tenant_toml(name, own_targets(sandbox_url, name), own_file=True))
        config = Path(tmp) / "bridge.toml"
        config.write_text(bridge_toml(server.url, tenants_dir=str(directory)))
        commands = {f"worker{n}": ["worker", "--config", str(config)]
                    for n in range(args.workers)}
        client = Redis.from_url(server.url)
        redis: Any = client  # redis-py's sync client, typed for both
        try:
            started = time.monotonic()
            with processes(commands, Path(tmp)):
                wait_until(lambda: redis.hlen(k.WORKERS) >= args.workers, timeout=120,
                           what=f"{args.workers} workers' heartbeats")
                # Every tenant was woken at the start (before the heartbeat): a turn taken
                # holds it at most TURN_LEASE_MS ahead, its end sets its next turn (an idle
                # tenant's: its first whole-portal check, at least ten minutes ahead) or none.
                wait_until(lambda: redis.zcount(
                    k.WAKE, "-inf", time.time() * 1000 + TURN_LEASE_MS) == 0,
                    timeout=600, what="the start-up turns")
                started_s = time.monotonic() - started
                time.sleep(args.warmup)
                first = before = commandstats(redis)
                slices, own = [], 1  # each read after the first counts one INFO of ours
                window = time.monotonic()
                while time.monotonic() - window < args.seconds - 1e-6:
                    time.sleep(min(SLICE_S, args.seconds - (time.monotonic() - window)))
                    after = commandstats(redis)
                    slices.append((sum(after.values()) - sum(before.values()) - 1)
                                  / SLICE_S)
                    before, own = after, own + 1
                seconds = time.monotonic() - window
                calls = before - first
                calls["info"] -= own - 1
                calls = +calls  # drop zero counts
        finally:
            client.close()
    return Reading(tenants, started_s, seconds, calls, slices)


def top(reading: Reading, most: int = 5) -> list[str]:
    return [f"      {name:24} {n / reading.seconds:8.2f}/s  ({n} calls)"
            for name, n in reading.calls.most_common(most)]


def describe(reading: Reading, workers: int) -> list[str]:
    lo, hi = min(reading.slices), max(reading.slices)
    return [f"  {reading.tenants} idle tenant{'s' if reading.tenants > 1 else ''}: "
            f"{reading.rate:.1f} commands/s ({reading.rate / workers:.1f} per worker; "
            f"{SLICE_S:g} s slices {lo:.1f} to {hi:.1f}); start-up turns done "
            f"{reading.started_s:.1f} s after the workers started", *top(reading)]


def grown(one: Reading, many: Reading, most: int = 10) -> list[str]:
    """The commands whose rate grew most from ``one`` to ``many``."""
    rates = {name: (many.calls[name] / many.seconds - one.calls[name] / one.seconds)
             for name in set(one.calls) | set(many.calls)}
    return [f"      {name:24} {one.calls[name] / one.seconds:8.2f}/s -> "
            f"{many.calls[name] / many.seconds:8.2f}/s  ({delta:+.2f}/s)"
            for name, delta in sorted(rates.items(), key=lambda kv: -kv[1])[:most]
            if delta > 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=20,
                        help="seconds after the start-up turns before the window opens")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="lb-bench-") as tmp, \
            processes({"sandbox": sandbox_command(port, "unused")}, Path(tmp)), \
            ready_sandbox(url) as sandbox:
        readings = []
        for tenants in (1, args.tenants):
            readings.append(measure(tenants, url, args, Path(tmp)))
            print(f"[{tenants} tenants: done]", flush=True)
        called = len(sandbox.get("/_sandbox/journal").json()["requests"])
    one, many = readings
    ratio = many.rate / one.rate
    print(f"\nIdle tenants: {args.workers} worker(s), the settings' defaults, "
          f"INFO commandstats over {args.seconds:g} s after the start-up turns and "
          f"{args.warmup:g} s more; the idle tenants' sandbox was called {called} times")
    for reading in readings:
        print("\n".join(describe(reading, args.workers)))
    verdict = "PASS" if ratio <= AIM else "FAIL"
    print(f"  {args.tenants} tenants against 1: x{ratio:.3f} ({ratio - 1:+.1%}; aim at most "
          f"{AIM - 1:+.0%}): {verdict}")
    if ratio > AIM:
        print("  the commands that grew:")
        print("\n".join(grown(one, many)))


if __name__ == "__main__":
    main()
