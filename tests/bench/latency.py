"""End-to-end latency (webhook sent -> accepted by the portal) and calls per event, both modes.

    python -m tests.bench.latency [--seconds 60] [--rate 500] [--groups 50] [--per-group 20]
                                  [--baseline-drain-s 60 | --full-baseline]

Posts a realistic stream (creates, then edits; bridge.dev.generate) at ``rate`` events/s for
``seconds`` to the whole bridge (tests/bench/harness.py) against the sandbox at the documented
limits (Rentix 300 requests/min, 30 bulk/min), with the default debounce (window 1 s, max_wait
10 s). Every event carries a price no other event has, so the price a portal accepted names the
version: an event's latency runs from when it was posted to when the sandbox answered the first
write that gave its listing that version or a later one (journal: arrival + answer delay). Prints
p50 and p99 per target beside the aims of issue 13 (Travtus p99 <= max_wait + 1 s; Rentix p99 <=
max_wait + the time its budgets need for the backlog of every listing), then the writes each
portal received against a one-call-per-event relay (as tests.bench.coalescing prints them).

The baseline is the same run with ``bulk_per_minute = 0`` (single PUTs at 280/min). Its first
pass over 1,000 listings alone needs ~3.6 minutes, so by default it stops ``--baseline-drain-s``
after the last post: an event not accepted by then took at least until then (a percentile that
may fall among them is printed as that lower bound, "> n s"), and its calls are those made so
far. ``--full-baseline`` follows it until it drains.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from bridge.dev.generate import event_stream
from tests.bench.harness import (
    BULK_MAX_OPS,
    BULK_PER_MINUTE,
    DEBOUNCE,
    PUT_PER_MINUTE,
    Calls,
    Latency,
    accepted_prices,
    delivered,
    distinct_prices,
    final_state,
    groups_of,
    histogram_bound,
    latencies,
    percentile,
    post_timed,
    rentix_behind,
    running_bridge,
    travtus_behind,
    wait_for,
)

MAX_WAIT_S = DEBOUNCE["max_wait_ms"] / 1000
PORTALS = {"travtus": "Travtus", "rentix": "Rentix"}
OWN_HISTOGRAM = "listing_bridge_event_delivery_seconds"


@dataclass
class Run:
    label: str
    bulk_per_minute: int
    posted: int
    accepted: int
    posted_s: float
    settled_s: float | None  # after the last post, when both portals held every final state
    behind: dict[str, int]  # listings each portal lacked at the end
    latency: dict[str, list[Latency]]
    calls: Calls
    own: dict[str, tuple[float | None, float | None]]  # the bridge's histogram: p50, p99 bounds


def run_mode(label: str, bulk_per_minute: int, events: list[dict[str, Any]], rate: float,
             drain_s: float) -> Run:
    finals, groups = final_state(events), groups_of(events)
    with running_bridge(bulk_per_minute=bulk_per_minute) as bench:
        report, sent_at = post_timed(bench.webhook_url, events, rate=rate)
        last_post = max(sent_at)
        done = wait_for(lambda: delivered(bench.sandbox, finals, groups), drain_s)
        settled = time.time() - last_post if done else None
        journal = bench.journal()
        metrics = bench.metrics()
        ended = time.time()
        behind = {"rentix": len(rentix_behind(bench.sandbox, finals)),
                  "travtus": len(travtus_behind(bench.sandbox, finals, groups))}
    accepted = accepted_prices(journal)
    return Run(label, bulk_per_minute, len(events), report.statuses.get(202, 0),
               report.elapsed_s, settled, behind,
               {p: latencies(events, sent_at, accepted[p], ended) for p in PORTALS},
               Calls.of(journal),
               {p: (histogram_bound(metrics, OWN_HISTOGRAM, p, 0.5),
                    histogram_bound(metrics, OWN_HISTOGRAM, p, 0.99)) for p in PORTALS})


def budget_s(listings: int, bulk_per_minute: int) -> float:
    """The time the Rentix budgets need to write every listing once."""
    per_minute = bulk_per_minute * BULK_MAX_OPS if bulk_per_minute else PUT_PER_MINUTE
    return listings / per_minute * 60


def seconds(value: Latency | None) -> str:
    if value is None:
        return "-"
    return f"{value.seconds:.1f} s" if value.exact else f"> {value.seconds:.0f} s"


def bound(value: float | None) -> str:
    return "-" if value is None else f"{value:g} s"


def describe(run: Run, listings: int) -> list[str]:
    settled = (f"both portals held every final state {run.settled_s:.1f} s after the last post"
               if run.settled_s is not None else
               f"stopped before the end: Rentix lacked {run.behind['rentix']} final states, "
               f"Travtus {run.behind['travtus']}")
    budget = budget_s(listings, run.bulk_per_minute)
    pace = (f"{run.bulk_per_minute} bulks x {BULK_MAX_OPS}/min" if run.bulk_per_minute
            else f"{PUT_PER_MINUTE} PUTs/min")
    aims = {"travtus": (MAX_WAIT_S + 1, f"max_wait {MAX_WAIT_S:.0f} s + 1 s"),
            "rentix": (MAX_WAIT_S + budget, f"max_wait {MAX_WAIT_S:.0f} s + {budget:.1f} s "
                                            f"for {listings} listings at {pace}")}
    out = [f"{run.label}: {run.posted} events posted in {run.posted_s:.1f} s "
           f"({run.posted / run.posted_s:.0f}/s; {run.accepted} accepted); {settled}",
           f"  {'':8} {'p50':>10} {'p99':>10}   aim for p99"]
    for portal, name in PORTALS.items():
        values = run.latency[portal]
        p99 = percentile(values, 0.99)
        aim, why = aims[portal]
        verdict = ("-" if p99 is None else "not met" if p99.seconds > aim
                   else "met" if p99.exact else "not known (the run stopped first)")
        missing = sum(not v.exact for v in values)
        out.append(f"  {name:8} {seconds(percentile(values, 0.5)):>10} {seconds(p99):>10}   "
                   f"<= {aim:.1f} s ({why}): {verdict}"
                   + (f"; {missing} events never accepted in the run" if missing else ""))
    own = "; ".join(f"{name} p50 <= {bound(run.own[p][0])}, p99 <= {bound(run.own[p][1])}"
                    for p, name in PORTALS.items())
    out.append("  the bridge's own histogram (a listing's latest change to its acceptance, bucket "
               f"bounds): {own}")
    calls = run.calls
    partial = "" if run.settled_s is not None else " (so far: the run stopped before the end)"
    out += [f"  calls per event{partial}: Rentix "
            f"{(calls.rentix_puts + calls.rentix_bulks) / run.posted:.3f}, Travtus "
            f"{calls.travtus_syncs / run.posted:.3f}; Rentix 429s: "
            f"{calls.rate_limited['rentix']}"]
    out += [f"  {line}" for line in calls.lines(run.posted)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--per-group", type=int, default=20)
    parser.add_argument("--bulk-per-minute", type=int, default=BULK_PER_MINUTE)
    parser.add_argument("--drain-s", type=float, default=300,
                        help="longest wait after the last post for the bulk run")
    parser.add_argument("--baseline-drain-s", type=float, default=60,
                        help="how long after the last post the baseline is followed")
    parser.add_argument("--full-baseline", action="store_true",
                        help="follow the baseline until it drains (several minutes)")
    parser.add_argument("--modes", default="bulk,baseline",
                        help="comma-separated: bulk, baseline")
    args = parser.parse_args()
    count = int(args.rate * args.seconds)
    events = distinct_prices(list(event_stream(count, args.groups, args.per_group)))
    listings = len(final_state(events))
    modes = {
        "bulk": (f"bulk (bulk_per_minute = {args.bulk_per_minute})", args.bulk_per_minute,
                 args.drain_s),
        "baseline": ("baseline (bulk_per_minute = 0, single PUTs)", 0,
                     max(args.drain_s, 600) if args.full_baseline else args.baseline_drain_s),
    }
    runs = [run_mode(label, bpm, events, args.rate, drain)
            for name, (label, bpm, drain) in modes.items() if name in args.modes.split(",")]
    print(f"\nEnd-to-end latency: {count} events at {args.rate:.0f}/s over {args.groups} groups x "
          f"{args.per_group} listings; sandbox at the documented 300 requests/min and 30 bulk/min; "
          f"debounce window {DEBOUNCE['window_ms']} ms, max_wait {DEBOUNCE['max_wait_ms']} ms")
    for run in runs:
        print("\n".join(describe(run, listings)))


if __name__ == "__main__":
    main()
