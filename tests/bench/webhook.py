"""Benchmark: the webhook endpoint against a no-op Starlette endpoint on the same server setup.

    python -m tests.bench.webhook [--seconds 10] [--connections 32] [--fsync always|everysec]

Both run under uvicorn (uvloop, httptools, one process); the bridge stores every event in a real
Redis with AOF. wrk replays pre-signed, realistic events, each webhook-id once. Prints both rates
and their ratio (the aim: the bridge at half the baseline's rate or better).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from bridge.dev.embedded import free_port, server_binary
from bridge.dev.generate import event_stream
from bridge.ingest.signatures import sign
from tests.conftest import SECRET
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


def wrk(url: str, requests: Path, seconds: int, connections: int) -> dict[str, float]:
    out: subprocess.CompletedProcess[str] | str = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(HERE / "replay.lua"),
         url, "--", str(requests)],
        capture_output=True, text=True,
    )
    if out.returncode:
        raise SystemExit(f"wrk failed: {out.stderr or out.stdout}")
    out = out.stdout
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for status, count in re.findall(r"status (\d+) (\d+)", out):
        figures[f"status_{status}"] = float(count)
    figures["p50_ms"] = float(re.search(r"p50_ms ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    figures["p99_ms"] = float(re.search(r"p99_ms ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return figures


def up(url: str) -> bool:
    try:
        httpx.get(url, timeout=0.5)
        return True
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--fsync", default="always", choices=["always", "everysec"])
    parser.add_argument("--events", type=int, default=80_000)
    parser.add_argument("--workers", type=int, default=1,
                        help="bridge web processes (the baseline always runs one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        redis_port, bridge_port, noop_port = free_port(), free_port(), free_port()
        requests = tmpdir / "requests.tsv"
        requests.write_text(signed_lines(args.events))
        config = tmpdir / "bridge.toml"
        config.write_text(f'redis_url = "redis://127.0.0.1:{redis_port}/0"\n'
                          f'[webhook]\nsecrets = ["{SECRET}"]\n')
        procs = [
            subprocess.Popen([server_binary(), "--port", str(redis_port), "--dir", tmp,
                              "--appendonly", "yes", "--appendfsync", args.fsync, "--save", "",
                              "--maxmemory-policy", "noeviction"], stdout=subprocess.DEVNULL),
            subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve", "--config",
                              str(config), "--port", str(bridge_port),
                              "--workers", str(args.workers)]),
            subprocess.Popen([sys.executable, "-m", "tests.bench.noop_app", str(noop_port)]),
        ]
        try:
            for port in (bridge_port, noop_port):
                wait_until(lambda p=port: up(f"http://127.0.0.1:{p}/"), timeout=20)
            base = "http://127.0.0.1:{}/webhooks/crm"
            wrk(base.format(noop_port), requests, 2, args.connections)  # warm-up
            noop = wrk(base.format(noop_port), requests, args.seconds, args.connections)
            bridge = wrk(base.format(bridge_port), requests, args.seconds, args.connections)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
    print(f"no-op Starlette endpoint: {noop['rps']:8.0f} req/s  "
          f"p50 {noop['p50_ms']:.2f} ms  p99 {noop['p99_ms']:.2f} ms")
    accepted = {k: int(v) for k, v in bridge.items() if k.startswith("status_")}
    print(f"bridge webhook endpoint:  {bridge['rps']:8.0f} req/s  "
          f"p50 {bridge['p50_ms']:.2f} ms  p99 {bridge['p99_ms']:.2f} ms  answers {accepted}")
    print(f"ratio bridge/no-op: {bridge['rps'] / noop['rps']:.2f} (aim: >= 0.50); "
          f"bridge web processes: {args.workers}; Redis appendfsync {args.fsync}; "
          f"{args.connections} connections, {args.seconds}s each")


if __name__ == "__main__":
    main()
