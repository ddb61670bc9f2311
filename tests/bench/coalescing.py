"""Realistic run: portal calls made by the bridge against a one-call-per-event relay.

    python -m tests.bench.coalescing [--events 10000] [--groups 50] [--per-group 20] [--rate 500]

Runs the whole bridge as separate processes (``bridge sandbox``, ``bridge serve``, two
``bridge worker``, a real Redis), posts a realistic stream (creates, then edits of price,
description, dates) at ``rate`` events/s, waits until both portals hold every listing's final
state, and counts the writes each portal received. A relay making one call per event and portal
would make events x 2. The sandbox's Rentix limit is raised for the run (at the documented
300/min the first 1,000 creates alone take 3.5 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bridge.dev.embedded import free_port
from bridge.dev.generate import event_stream
from bridge.dev.sender import send_events
from tests.conftest import SECRET
from tests.support.servers import redis_server, wait_until
from tests.support.stack import stack_config

BRIDGE = [sys.executable, "-m", "bridge.cli"]


def final_state(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["listing"]["external_ref"]: e["listing"] for e in events}


def delivered(sandbox: httpx.Client, finals: dict[str, dict[str, Any]],
              groups: list[str]) -> bool:
    items = sandbox.get("/_sandbox/rentix/listings").json()["items"]
    rentix = {i["externalId"]: i["formData"].get("announcementValue") for i in items}
    if any(rentix.get(ref) != float(listing["price"]["amount"])
           for ref, listing in finals.items()):
        return False
    travtus: dict[str, Any] = {}
    for group in groups:
        for item in sandbox.get("/_sandbox/travtus/listings",
                                params={"group": group}).json()["listings"]:
            travtus[item["external_reference"]] = item["lease_terms"][0]["rent"]
    return all(travtus.get(ref) == float(listing["price"]["amount"])
               for ref, listing in finals.items())


def _debug(sandbox: httpx.Client, finals: dict[str, Any], groups: list[str],
           config: Path) -> None:
    time.sleep(40)
    items = sandbox.get("/_sandbox/rentix/listings").json()["items"]
    rentix = {i["externalId"]: i["formData"].get("announcementValue") for i in items}
    bad = [r for r, lst in finals.items() if rentix.get(r) != float(lst["price"]["amount"])]
    print("rentix behind:", len(bad), bad[:5])
    journal = sandbox.get("/_sandbox/journal", params={"portal": "rentix"}).json()["requests"]
    for ref in bad[:2]:
        print("final", finals[ref]["version"], finals[ref]["price"]["amount"],
              "portal", rentix.get(ref))
        for r in journal:
            if (r.get("body") or {}).get("externalId") == ref:
                print("  ", r["seq"], r["at"], r["status"], r["replayed"], r["idempotency_key"],
                      r["body"].get("announcementValue"), r.get("duration_ms"))
    travtus: dict[str, Any] = {}
    for group in groups:
        for item in sandbox.get("/_sandbox/travtus/listings",
                                params={"group": group}).json()["listings"]:
            travtus[item["external_reference"]] = item["lease_terms"][0]["rent"]
    badt = [r for r, lst in finals.items() if travtus.get(r) != float(lst["price"]["amount"])]
    print("travtus behind:", len(badt), badt[:5])
    print(subprocess.run([*BRIDGE, "status", "--config", str(config)], capture_output=True,
                         text=True).stdout[:3000])


def up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--per-group", type=int, default=20)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args()
    events = list(event_stream(args.events, args.groups, args.per_group))
    finals = final_state(events)
    groups = sorted({e["group"] for e in events})
    web_port, sandbox_port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    with redis_server() as redis, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bridge.toml"
        config.write_text(stack_config(
            redis.url, sandbox_url, rentix_per_minute=100_000,
            debounce={"window_ms": 1000, "max_wait_ms": 10_000},
            delivery={"job_timeout_s": 60, "poll_interval_ms": 50}))
        procs = [
            subprocess.Popen([*BRIDGE, "sandbox", "--port", str(sandbox_port),
                              "--rentix-per-minute", "100000"]),
            subprocess.Popen([*BRIDGE, "serve", "--config", str(config), "--port",
                              str(web_port)]),
            *[subprocess.Popen([*BRIDGE, "worker", "--config", str(config)],
                               stderr=subprocess.DEVNULL) for _ in range(2)],
        ]
        try:
            wait_until(lambda: up(f"http://127.0.0.1:{web_port}/healthz"), timeout=20)
            wait_until(lambda: up(f"{sandbox_url}/_sandbox/journal"), timeout=20)
            started = time.monotonic()
            report = asyncio.run(send_events(f"http://127.0.0.1:{web_port}/webhooks/crm",
                                             SECRET, events, concurrency=16, rate=args.rate))
            sent_s = time.monotonic() - started
            with httpx.Client(base_url=sandbox_url, timeout=30) as sandbox:
                if "--debug" in sys.argv:
                    _debug(sandbox, finals, groups, config)
                wait_until(lambda: delivered(sandbox, finals, groups), timeout=300,
                           what="every listing's final state on both portals")
                settled_s = time.monotonic() - started
                journal = sandbox.get("/_sandbox/journal").json()["requests"]
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=20)
    puts = sum(1 for r in journal if r["portal"] == "rentix" and r["method"] == "PUT")
    syncs = sum(1 for r in journal if r["portal"] == "travtus"
                and r["path"].startswith("/listing/sync"))
    relay = args.events * 2
    print(f"{args.events} events over {args.groups} groups x {args.per_group} listings, posted "
          f"in {sent_s:.1f}s ({report.statuses.get(202, 0)} accepted); both portals held every "
          f"final state {settled_s - sent_s:.1f}s after the last post")
    print(f"bridge: {puts} Rentix PUTs + {syncs} Travtus syncs = {puts + syncs} writes "
          f"(+{len(journal) - puts - syncs} token and find reads)")
    print(f"one-call-per-event relay: {relay} writes; the bridge made {(puts + syncs) / relay:.1%}"
          f" of them ({relay / (puts + syncs):.1f}x fewer)")


if __name__ == "__main__":
    main()
