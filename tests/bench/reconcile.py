"""The read cost of reconciling: portal calls per 1,000 listings, per portal.

    python -m tests.bench.reconcile [--groups 50] [--per-group 20]

Loads ``groups x per-group`` listings through the real webhook into both sandbox portals (a
worker process delivers them), then runs ``bridge reconcile`` twice against a portal that holds
exactly what the CRM wants: a whole pass (Rentix read by pages, Travtus by group) and, as the
baseline measured in the same run, one run per group (Rentix read by external ID, one call per
listing). Prints the GET/find calls each portal received, and per 1,000 listings.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bridge.app import create_app
from bridge.sandbox import SandboxSettings
from bridge.sandbox import create_app as create_sandbox
from bridge.settings import load_settings
from tests.conftest import SECRET
from tests.support import crm
from tests.support.servers import redis_server, serve_app, wait_until
from tests.support.stack import stack_config

BRIDGE = [sys.executable, "-m", "bridge.cli"]


def reads(sandbox: httpx.Client, since: int) -> dict[str, int]:
    journal = sandbox.get("/_sandbox/journal").json()["requests"][since:]
    return {
        "rentix": sum(1 for r in journal if r["portal"] == "rentix" and r["method"] == "GET"),
        "travtus": sum(1 for r in journal if r["portal"] == "travtus"
                       and r["path"].endswith("/listings/find/")),
    }


def run_reconcile(config: Path, *args: str) -> None:
    subprocess.run([*BRIDGE, "reconcile", "--config", str(config), *args], check=True,
                   capture_output=True, timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--per-group", type=int, default=20)
    args = parser.parse_args()
    total = args.groups * args.per_group
    groups = [f"g{n:03d}" for n in range(args.groups)]
    with redis_server() as redis, tempfile.TemporaryDirectory() as tmp, \
            serve_app(create_sandbox(SandboxSettings(rentix_per_minute=100_000))) as box:
        config = Path(tmp) / "bridge.toml"
        config.write_text(stack_config(redis.url, box, rentix_per_minute=50_000,
                                       reconcile={"read_share": 1.0}))
        settings = load_settings(config)
        with serve_app(create_app(settings)) as web, \
                httpx.Client(base_url=web, timeout=30) as bridge, \
                httpx.Client(base_url=box, timeout=30) as sandbox:
            worker = subprocess.Popen([*BRIDGE, "worker", "--config", str(config)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                for group in groups:
                    for i in range(args.per_group):
                        answer = crm.post(bridge, SECRET, crm.upsert(group, f"{group}-{i}", 1))
                        assert answer.status_code == 202, answer.text
                wait_until(lambda: _delivered(sandbox, total), timeout=600,
                           what="every listing on both portals")
            finally:
                worker.terminate()
                worker.wait(timeout=30)
            start = len(sandbox.get("/_sandbox/journal").json()["requests"])
            began = time.monotonic()
            run_reconcile(config)
            whole, whole_s = reads(sandbox, start), time.monotonic() - began
            start = len(sandbox.get("/_sandbox/journal").json()["requests"])
            began = time.monotonic()
            for group in groups:
                run_reconcile(config, "--group", group)
            per_group, per_group_s = reads(sandbox, start), time.monotonic() - began
    print(f"{total} listings in {args.groups} groups, both portals in step")
    for name, counts, seconds in (("whole pass", whole, whole_s),
                                  ("baseline: one run per group", per_group, per_group_s)):
        print(f"{name:<30} " + "  ".join(
            f"{portal} {n} calls ({n * 1000 / total:.0f} per 1,000)"
            for portal, n in counts.items()) + f"  [{seconds:.1f} s]")


def _delivered(sandbox: httpx.Client, total: int) -> bool:
    rentix = sandbox.get("/_sandbox/rentix/listings").json()["items"]
    travtus: list[Any] = sandbox.get("/_sandbox/travtus/listings").json()["listings"]
    return len(rentix) == total and len(travtus) == total


if __name__ == "__main__":
    main()
