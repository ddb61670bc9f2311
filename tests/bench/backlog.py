"""Backlog drain: a burst of new listings reaching Rentix, by bulk and by single PUTs.

    python -m tests.bench.backlog [--listings 2000] [--groups 100]
                                  [--baseline-listings 400 | --full-baseline]

Posts ``listings`` creates over ``groups`` groups as fast as the bridge takes them, then times
until the sandbox's Rentix holds every listing with its content (price, description, area,
floor), reading when from its journal. The run uses the bridge's defaults (``bulk_per_minute``
28) against the sandbox at the documented limits (300 requests/min, 30 bulk/min) and counts the
Rentix requests by kind and the 429s it answered. The baseline is the same run with
``bulk_per_minute = 0`` (single PUTs at 280/min, as before bulk): ~430 s for 2,000 listings, so
by default it drains a smaller backlog (``--baseline-listings``, same group size) and prints its
measured rate and the full backlog's time extrapolated from it; ``--full-baseline`` runs it whole.
Aim (issue 13): bulk under 90 s, at most a fifth of PUT-only, and no 429.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from bridge.dev.generate import event_stream
from tests.bench.harness import (
    BULK_PER_MINUTE,
    PUT_PER_MINUTE,
    BenchBridge,
    Calls,
    answered_at,
    final_state,
    post_timed,
    rentix_forms,
    running_bridge,
    wait_for,
)

# canonical field -> the Rentix field the sandbox keeps it in (bridge/portals/rentix_mapping.py)
CONTENT = {"description": "announcementDescription", "area_sqm": "propertyArea",
           "floor": "propertyFloorNumber"}
AIM_S = 90


@dataclass
class Drain:
    label: str
    listings: int
    posted_s: float
    held: int  # listings Rentix held with their content at the end
    done_s: float | None  # from the first post to the last accepted write (None: not all held)
    first_write_s: float | None
    last_write_s: float | None
    calls: Calls

    @property
    def per_minute(self) -> float:
        """Listings accepted per minute while Rentix was being written."""
        if self.first_write_s is None or self.last_write_s is None:
            return 0.0
        return (self.held - 1) / max(self.last_write_s - self.first_write_s, 1e-9) * 60

    def extrapolated_s(self, listings: int) -> float:
        return (self.first_write_s or 0.0) + listings / max(self.per_minute, 1e-9) * 60


def held_with_content(forms: dict[str, dict[str, Any]], finals: dict[str, dict[str, Any]]) -> int:
    def holds(ref: str, listing: dict[str, Any]) -> bool:
        form = forms.get(ref) or {}
        return (form.get("announcementValue") == float(listing["price"]["amount"])
                and all(form.get(dst) == listing[src] for src, dst in CONTENT.items()))
    return sum(holds(ref, listing) for ref, listing in finals.items())


def drain(label: str, bulk_per_minute: int, listings: int, groups: int,
          timeout: float) -> Drain:
    per_group = max(1, listings // groups)
    events = list(event_stream(listings, groups, per_group))
    finals = final_state(events)
    with running_bridge(bulk_per_minute=bulk_per_minute) as bench:
        began = time.time()
        report, _ = post_timed(bench.webhook_url, events)
        posted_s = time.time() - began
        assert report.statuses.get(202, 0) == len(events), report.lines()
        wait_for(lambda: held_with_content(rentix_forms(bench.sandbox), finals) == len(finals),
                 timeout)
        return measured(label, bench, finals, began, posted_s)


def measured(label: str, bench: BenchBridge, finals: dict[str, dict[str, Any]], began: float,
             posted_s: float) -> Drain:
    held = held_with_content(rentix_forms(bench.sandbox), finals)
    journal = bench.journal("rentix")
    writes = [answered_at(r) - began for r in journal
              if r["method"] in ("PUT", "POST") and 200 <= r["status"] < 300]
    first, last = (min(writes), max(writes)) if writes else (None, None)
    return Drain(label, len(finals), posted_s, held, last if held == len(finals) else None,
                 first, last, Calls.of(journal))


def describe(run: Drain) -> list[str]:
    calls = run.calls
    done = (f"all {run.listings} held with their content {run.done_s:.1f} s after the first post"
            if run.done_s is not None else
            f"NOT DRAINED: {run.held} of {run.listings} held when the wait ended")
    return [
        f"{run.label}: {run.listings} listings posted in {run.posted_s:.1f} s; {done}",
        f"  Rentix requests: {calls.rentix_puts} PUT + {calls.rentix_bulks} bulk "
        f"({calls.bulk_ops} operations) + {calls.reads} other; 429s received: "
        f"{calls.rate_limited['rentix']}",
        f"  rate while writing: {run.per_minute:.0f} listings/min "
        f"(first write at {run.first_write_s or 0:.1f} s)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listings", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--bulk-per-minute", type=int, default=BULK_PER_MINUTE)
    parser.add_argument("--baseline-listings", type=int, default=400,
                        help="backlog of the PUT-only baseline (same group size); the full "
                             "backlog's time is extrapolated from its rate")
    parser.add_argument("--full-baseline", action="store_true",
                        help="run the baseline over the whole backlog (~7 minutes)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="longest wait for a drain, s (default: twice PUT-only's time)")
    args = parser.parse_args()
    per_group = max(1, args.listings // args.groups)
    base_n = args.listings if args.full_baseline else min(args.baseline_listings, args.listings)

    def timeout(n: int) -> float:
        return args.timeout or 60 + 2 * n / PUT_PER_MINUTE * 60

    bulk = drain(f"bulk (bulk_per_minute = {args.bulk_per_minute})", args.bulk_per_minute,
                 args.listings, args.groups, timeout(args.listings))
    base = drain("baseline (bulk_per_minute = 0, single PUTs)", 0, base_n,
                 max(1, base_n // per_group), timeout(base_n))
    print(f"\nBacklog drain: {args.listings} new listings over {args.groups} groups; sandbox at "
          "the documented 300 requests/min and 30 bulk/min; Rentix target at 280/min")
    for run in (bulk, base):
        print("\n".join(describe(run)))
    if base.listings == args.listings:
        base_s, how = base.done_s, "measured"
    else:
        base_s, how = base.extrapolated_s(args.listings), (
            f"EXTRAPOLATED from {base.listings} listings at {base.per_minute:.0f}/min")
    print(f"  baseline for {args.listings} listings: "
          + (f"{base_s:.0f} s ({how})" if base_s is not None else "not measured (not drained)"))
    if bulk.done_s is not None and base_s:
        print(f"bulk: {bulk.done_s:.1f} s vs baseline {base_s:.0f} s = {bulk.done_s / base_s:.2f} "
              f"of the time ({base_s / bulk.done_s:.1f}x faster); aim: under {AIM_S} s and at "
              f"most 0.20 of the baseline, no 429 ({bulk.calls.rate_limited['rentix']} received)")


if __name__ == "__main__":
    main()
