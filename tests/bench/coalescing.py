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
import time
from typing import Any

from bridge.dev.generate import event_stream
from tests.bench.harness import (
    BenchBridge,
    Calls,
    delivered,
    final_state,
    groups_of,
    post_timed,
    rentix_behind,
    rentix_forms,
    running_bridge,
    travtus_behind,
)
from tests.support.servers import wait_until

RAISED_LIMITS = {"rentix_per_minute": 100_000, "rentix_bulk_per_minute": 30}


def _debug(bench: BenchBridge, finals: dict[str, Any], groups: list[str]) -> None:
    time.sleep(40)  # let the flushes run before looking at who is behind
    sandbox = bench.sandbox
    forms = {ref: form.get("announcementValue")
             for ref, form in rentix_forms(sandbox).items()}
    bad = rentix_behind(sandbox, finals)
    print("rentix behind:", len(bad), bad[:5])
    journal = bench.journal("rentix")
    for ref in bad[:2]:
        print("final", finals[ref]["version"], finals[ref]["price"]["amount"],
              "portal", forms.get(ref))
        for r in journal:
            if (r.get("body") or {}).get("externalId") == ref:
                print("  ", r["seq"], r["at"], r["status"], r["replayed"], r["idempotency_key"],
                      r["body"].get("announcementValue"), r.get("duration_ms"))
    badt = travtus_behind(sandbox, finals, groups)
    print("travtus behind:", len(badt), badt[:5])
    print(bench.status()[:3000])


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
    groups = groups_of(events)
    with running_bridge(limits=RAISED_LIMITS, rentix_per_minute=100_000) as bench:
        started = time.monotonic()
        report, _ = post_timed(bench.webhook_url, events, rate=args.rate)
        sent_s = time.monotonic() - started
        if args.debug:
            _debug(bench, finals, groups)
        wait_until(lambda: delivered(bench.sandbox, finals, groups), timeout=300,
                   what="every listing's final state on both portals")
        settled_s = time.monotonic() - started
        calls = Calls.of(bench.journal())
    print(f"{args.events} events over {args.groups} groups x {args.per_group} listings, posted "
          f"in {sent_s:.1f}s ({report.statuses.get(202, 0)} accepted); both portals held every "
          f"final state {settled_s - sent_s:.1f}s after the last post")
    print("\n".join(calls.lines(args.events)))


if __name__ == "__main__":
    main()
