"""End-to-end latency (webhook sent -> accepted by the portal) under a steady stream, Rentix's
three ways of spending its budgets side by side (issue 30).

    python -m tests.bench.latency [--seconds 60] [--rate 500] [--groups 50] [--per-group 20]
                                  [--configs default,bulk-only,put-only] [--big-snapshot 5000]
                                  [--max-wait-ms 10000] [--baseline-drain-s 60 | --full-baseline]

Posts a realistic stream (creates, then edits; bridge.dev.generate) at ``rate`` events/s for
``seconds`` to the whole bridge (tests/bench/harness.py) against the sandbox at the documented
limits (Rentix 300 requests/min, 30 bulk/min), with the default debounce (window 1 s, max_wait
10 s; ``--max-wait-ms`` to compare), once per Rentix configuration:

- default: the settings' defaults (bulk, and single PUTs on the general budget the bulks leave:
  the PUT lane, ``put_lane = true``, where the bridge has that setting);
- bulk-only: ``put_lane = false`` (where the bridge has no such setting, the same as default);
- default-no-ahead, bulk-only-no-ahead (not run unless named): the same with ``ahead = false``
  (every Rentix write waits for its group's flush), where the bridge has that setting;
- put-only: ``bulk_per_minute = 0`` (single PUTs at 280/min, the baseline). Its first pass over
  1,000 listings alone needs ~3.6 minutes, so by default it stops ``--baseline-drain-s`` after
  the last post: an event not accepted by then took at least until then (a percentile that may
  fall among them is printed as that lower bound, "> n s"), and its calls are those made so far.
  ``--full-baseline`` follows it until it drains.

Every event carries a price no other event has, so the price a portal accepted names the
version: an event's latency runs from when it was posted to when the sandbox answered the first
write that gave its listing that version or a later one (journal: arrival + answer delay). Each
configuration prints p50 and p99 per target beside the aims (Rentix p99 <= 22 s and p50 <= 10 s;
Travtus p99 <= max_wait + 1 s; no 429), the 429s the sandbox answered, the share of each
documented budget the bridge used (the sandbox's journal: requests per minute from the first
post to the last Rentix request, and the busiest 60 s, against 300 general and 30 bulk), where
an event's Rentix time went (until its group's flush, read as its Travtus acceptance, then after
it), and the writes each portal received against a one-call-per-event relay. The header prints
the bound the budgets set at this load: every listing the stream changes written once at the
target's full general and bulk rates (280 + 28 x 100 a minute: ~19.5 s for 1,000 listings).

Fairness (``--big-snapshot N``, 5,000 by default, 0 leaves it out): the default configuration is
run again with a ``group.snapshot`` of N new listings in one more group posted just before the
stream; the stream's groups' Rentix p50/p99 are printed beside the run without it (aim: p99
moves by at most 2 s), with the time until Rentix held the whole snapshot.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

from bridge.dev.generate import event_stream
from tests.bench.harness import (
    BULK_MAX_OPS,
    BULK_PER_MINUTE,
    DEBOUNCE,
    DOCUMENTED_LIMITS,
    PUT_PER_MINUTE,
    Accepted,
    BudgetUse,
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
    post_one,
    post_timed,
    rentix_behind,
    rentix_has,
    running_bridge,
    snapshot_event,
    travtus_behind,
    wait_for,
)

PORTALS = {"travtus": "Travtus", "rentix": "Rentix"}
OWN_HISTOGRAM = "listing_bridge_event_delivery_seconds"
RENTIX_P99_AIM_S = 22.0
RENTIX_P50_AIM_S = 10.0
FAIRNESS_AIM_S = 2.0
BIG_GROUP = "group-big"
BIG_PRICE_BASE = 1_000_000  # above every stream event's price
ALIASES = {"bulk": "default", "baseline": "put-only"}  # the names --modes took before


@dataclass(frozen=True)
class Config:
    name: str
    label: str
    bulk_per_minute: int
    rentix: dict[str, Any]  # more settings of the Rentix target
    drain_s: float
    snapshot: int = 0  # listings of the big group's snapshot (0: none)


@dataclass
class Snapshot:
    listings: int
    status: int
    posted_s: float  # how long its post took
    held_s: float | None  # from its post until Rentix held every one of its listings
    held: int


@dataclass
class Run:
    config: Config
    posted: int
    accepted: int
    posted_s: float
    settled_s: float | None  # after the last post, when both portals held every final state
    behind: dict[str, int]  # listings each portal lacked at the end
    latency: dict[str, list[Latency]]
    calls: Calls
    budgets: BudgetUse
    own: dict[str, tuple[float | None, float | None]]  # the bridge's histogram: p50, p99 bounds
    snapshot: Snapshot | None = None
    # Rentix writes of the stream's listings while it ran (its first 20 s left out): the gap
    # between one listing's writes, and the age of the content a write carried (its event's post)
    cycle: list[float] = field(default_factory=list)
    age: list[float] = field(default_factory=list)
    # Rentix latencies of the events posted once the first pass could have ended (the first
    # max_wait plus the budgets' bound): the steady state, without the cold start
    steady: list[Latency] = field(default_factory=list)
    # The big snapshot's share of the Rentix writes while the stream ran (its first 20 s left
    # out): fair is one group's share, 1 / (groups + 1)
    big_share: float | None = None


def run_config(config: Config, events: list[dict[str, Any]], rate: float,
               debounce: dict[str, Any]) -> Run:
    finals, groups = final_state(events), groups_of(events)
    big = (snapshot_event(BIG_GROUP, config.snapshot, price_base=BIG_PRICE_BASE)
           if config.snapshot else None)
    big_finals = final_state({"listing": item} for item in big["listings"]) if big else {}
    webhook = {"max_body_bytes": 64 * 1024 * 1024} if big else None
    with running_bridge(bulk_per_minute=config.bulk_per_minute, rentix=config.rentix,
                        debounce=debounce, webhook=webhook) as bench:
        snapshot = None
        if big:
            status, big_sent = post_one(bench.webhook_url, big)
            snapshot = Snapshot(config.snapshot, status, time.time() - big_sent, None, 0)
        report, sent_at = post_timed(bench.webhook_url, events, rate=rate)
        first_post, last_post = min(sent_at), max(sent_at)
        big_done: list[float] = []

        def done() -> bool:
            if big and not big_done and not rentix_behind(bench.sandbox, big_finals):
                big_done.append(time.time())
            return (delivered(bench.sandbox, finals, groups) and (not big or bool(big_done)))

        finished = wait_for(done, config.drain_s)
        settled = time.time() - last_post if finished else None
        journal = bench.journal()
        metrics = bench.metrics()
        ended = time.time()
        behind = {"rentix": len(rentix_behind(bench.sandbox, finals)),
                  "travtus": len(travtus_behind(bench.sandbox, finals, groups))}
        if snapshot is not None:
            snapshot.held = len(big_finals) - len(rentix_behind(bench.sandbox, big_finals))
            snapshot.held_s = big_done[0] - big_sent if big_done else None
    accepted = accepted_prices(journal)
    cycle, age = rhythm(events, sent_at, accepted["rentix"], first_post + 20, last_post)
    latency = {p: latencies(events, sent_at, accepted[p], ended) for p in PORTALS}
    warm = first_post + debounce["max_wait_ms"] / 1000 + bound_s(len(finals))
    steady = [v for v, sent in zip(latency["rentix"], sent_at, strict=True) if sent >= warm]
    return Run(config, len(events), report.statuses.get(202, 0), report.elapsed_s, settled,
               behind, latency, Calls.of(journal), BudgetUse.of(journal, first_post),
               {p: (histogram_bound(metrics, OWN_HISTOGRAM, p, 0.5),
                    histogram_bound(metrics, OWN_HISTOGRAM, p, 0.99)) for p in PORTALS},
               snapshot, cycle, age, steady,
               big_share(accepted["rentix"], first_post + 20, last_post) if big else None)


def big_share(accepted: list[Accepted], start: float, end: float) -> float | None:
    """The share of the Rentix writes answered between ``start`` and ``end`` that carried the
    big snapshot's listings (their prices start at BIG_PRICE_BASE)."""
    prices = [price for at, _, price in accepted if start <= at <= end
              and isinstance(price, int | float)]
    return sum(p >= BIG_PRICE_BASE for p in prices) / len(prices) if prices else None


def rhythm(events: list[dict[str, Any]], sent_at: list[float], accepted: list[Accepted],
           start: float, end: float) -> tuple[list[float], list[float]]:
    """Of the stream's listings' Rentix writes answered between ``start`` and ``end``: the
    gaps between one listing's successive writes, and each write's content's age (from its
    event's post), both sorted."""
    posted = {float(e["listing"]["price"]["amount"]): sent
              for e, sent in zip(events, sent_at, strict=True)}
    last: dict[str, float] = {}
    gaps, ages = [], []
    for at, ref, price in sorted(accepted, key=lambda a: a[0]):
        sent = posted.get(float(price)) if isinstance(price, int | float) else None
        if sent is None or ref is None:
            continue  # not the stream's (the big snapshot's)
        if start <= at <= end:
            ages.append(at - sent)
            if ref in last:
                gaps.append(at - last[ref])
        last[ref] = at
    return sorted(gaps), sorted(ages)


def bound_s(listings: int, requests_per_minute: int = PUT_PER_MINUTE,
            bulk_per_minute: int = BULK_PER_MINUTE) -> float:
    """The time to write ``listings`` once at the full general and bulk rates: each minute
    ``requests_per_minute`` single PUTs and ``bulk_per_minute`` bulks of BULK_MAX_OPS."""
    return listings / (requests_per_minute + bulk_per_minute * BULK_MAX_OPS) * 60


def seconds(value: Latency | None) -> str:
    if value is None:
        return "-"
    return f"{value.seconds:.1f} s" if value.exact else f"> {value.seconds:.0f} s"


def bound(value: float | None) -> str:
    return "-" if value is None else f"{value:g} s"


def verdict(value: Latency | None, aim: float) -> str:
    if value is None:
        return "-"
    if value.seconds > aim:
        return "not met"
    return "met" if value.exact else "not known (the run stopped first)"


def split(run: Run) -> list[float] | None:
    """Per event accepted by both portals, its Rentix time after its Travtus acceptance (the
    group's flush, near enough: Travtus takes each flush's sync at once)."""
    pairs = zip(run.latency["rentix"], run.latency["travtus"], strict=True)
    out = sorted(r.seconds - t.seconds for r, t in pairs if r.exact and t.exact)
    return out or None


def quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def describe(run: Run, max_wait_s: float) -> list[str]:
    settled = (f"both portals held every final state {run.settled_s:.1f} s after the last post"
               if run.settled_s is not None else
               f"stopped {run.config.drain_s:.0f} s after the last post: Rentix lacked "
               f"{run.behind['rentix']} final states, Travtus {run.behind['travtus']}")
    out = [f"{run.config.label}: {run.posted} events posted in {run.posted_s:.1f} s "
           f"({run.posted / run.posted_s:.0f}/s; {run.accepted} accepted); {settled}",
           f"  {'':8} {'p50':>10} {'p99':>10}   aims"]
    travtus, rentix = run.latency["travtus"], run.latency["rentix"]
    t99, r50, r99 = (percentile(travtus, 0.99), percentile(rentix, 0.5),
                     percentile(rentix, 0.99))
    missing = sum(not v.exact for v in rentix)
    out.append(f"  {'Travtus':8} {seconds(percentile(travtus, 0.5)):>10} {seconds(t99):>10}   "
               f"p99 <= {max_wait_s + 1:.1f} s (max_wait {max_wait_s:g} s + 1 s): "
               f"{verdict(t99, max_wait_s + 1)}")
    out.append(f"  {'Rentix':8} {seconds(r50):>10} {seconds(r99):>10}   "
               f"p99 <= {RENTIX_P99_AIM_S:g} s: {verdict(r99, RENTIX_P99_AIM_S)}; "
               f"p50 <= {RENTIX_P50_AIM_S:g} s: {verdict(r50, RENTIX_P50_AIM_S)}"
               + (f"; {missing} events never accepted in the run" if missing else ""))
    if run.steady:
        out.append(f"  Rentix once the first pass could have ended (the first max_wait + the "
                   f"bound): p50 {seconds(percentile(run.steady, 0.5))}, p99 "
                   f"{seconds(percentile(run.steady, 0.99))} ({len(run.steady)} events)")
    after = split(run)
    if after:
        out.append(f"  where Rentix's time went: until the group's flush (its Travtus "
                   f"acceptance) p50 {seconds(percentile(travtus, 0.5))}; after it, p50 "
                   f"{quantile(after, 0.5):.1f} s, p99 {quantile(after, 0.99):.1f} s")
    if run.cycle and run.age:
        out.append(f"  Rentix writes while the stream ran: a listing written every "
                   f"{quantile(run.cycle, 0.5):.1f} s (p50; p10 {quantile(run.cycle, 0.1):.1f} "
                   f"s, p90 {quantile(run.cycle, 0.9):.1f} s; "
                   f"{sum(g < 5 for g in run.cycle) / len(run.cycle):.1%} within 5 s), "
                   f"the content a write carried posted {quantile(run.age, 0.5):.1f} s "
                   f"before (p50; p90 {quantile(run.age, 0.9):.1f} s)")
    calls, use = run.calls, run.budgets
    general, bulk = (DOCUMENTED_LIMITS["rentix_per_minute"],
                     DOCUMENTED_LIMITS["rentix_bulk_per_minute"])
    limited = calls.rate_limited["rentix"]
    out.append(f"  Rentix 429s: {limited} (aim 0{'' if not limited else ': NOT MET'}); "
               f"budgets used from the first post to the last Rentix request ({use.span_s:.0f} s): "
               f"general {use.general_per_minute:.0f}/min "
               f"= {use.general_per_minute / general:.0%} of {general} (busiest 60 s "
               f"{use.general_peak}), bulk {use.bulk_per_minute:.1f}/min = "
               f"{use.bulk_per_minute / bulk:.0%} of {bulk} (busiest 60 s {use.bulk_peak})")
    own = "; ".join(f"{name} p50 <= {bound(run.own[p][0])}, p99 <= {bound(run.own[p][1])}"
                    for p, name in PORTALS.items())
    out.append("  the bridge's own histogram (a listing's latest change to its acceptance, bucket "
               f"bounds): {own}")
    partial = "" if run.settled_s is not None else " (so far: the run stopped before the end)"
    out += [f"  calls per event{partial}: Rentix "
            f"{(calls.rentix_puts + calls.rentix_bulks) / run.posted:.3f}, Travtus "
            f"{calls.travtus_syncs / run.posted:.3f}"]
    out += [f"  {line}" for line in calls.lines(run.posted)]
    if run.snapshot:
        snap = run.snapshot
        held = (f"Rentix held all of it {snap.held_s:.1f} s after its post" if snap.held_s
                is not None else f"Rentix held {snap.held} of its listings when the run ended")
        out.append(f"  the snapshot: {snap.listings} listings in {BIG_GROUP}, answered "
                   f"{snap.status} in {snap.posted_s:.1f} s; {held}"
                   + ("" if run.big_share is None else
                      f"; {run.big_share:.1%} of Rentix's writes while the stream ran"))
    return out


def fairness(plain: Run, loaded: Run) -> str:
    before, after = (percentile(plain.latency["rentix"], 0.99),
                     percentile(loaded.latency["rentix"], 0.99))
    p50s = (percentile(plain.latency["rentix"], 0.5), percentile(loaded.latency["rentix"], 0.5))
    if before is None or after is None:
        return "fairness: not measured"
    moved = after.seconds - before.seconds
    met = ("not known" if not (before.exact and after.exact)
           else "met" if abs(moved) <= FAIRNESS_AIM_S else "not met")
    return (f"fairness: the stream's groups' Rentix p99 {seconds(before)} without the "
            f"{loaded.config.snapshot}-listing snapshot, {seconds(after)} with it: moved "
            f"{moved:+.1f} s (aim: at most {FAIRNESS_AIM_S:g} s: {met}); "
            f"p50 {seconds(p50s[0])} -> {seconds(p50s[1])}")


def configs(args: argparse.Namespace) -> list[Config]:
    lane = rentix_has("put_lane")
    put_only_drain = max(args.drain_s, 600) if args.full_baseline else args.baseline_drain_s
    bpm = args.bulk_per_minute
    known = {
        "default": Config("default", f"default (bulk_per_minute = {bpm}"
                          + (", put_lane = true)" if lane else "; this bridge has no put_lane)"),
                          bpm, {"put_lane": True} if lane else {}, args.drain_s),
        "bulk-only": Config("bulk-only", f"bulk-only (bulk_per_minute = {bpm}"
                            + (", put_lane = false)" if lane else
                               "; no put_lane setting: the same as default)"),
                            bpm, {"put_lane": False} if lane else {}, args.drain_s),
        "put-only": Config("put-only", "put-only (bulk_per_minute = 0, single PUTs)", 0, {},
                           put_only_drain),
    }
    if rentix_has("ahead"):  # baselines for writes ahead of the debounce (issue 30)
        known["default-no-ahead"] = Config(
            "default-no-ahead", f"default without writes ahead (bulk_per_minute = {bpm}, "
            "put_lane = true, ahead = false)", bpm, {"put_lane": True, "ahead": False},
            args.drain_s)
        known["bulk-only-no-ahead"] = Config(
            "bulk-only-no-ahead", f"bulk-only without writes ahead (bulk_per_minute = {bpm}, "
            "put_lane = false, ahead = false)", bpm, {"put_lane": False, "ahead": False},
            args.drain_s)
    names = [ALIASES.get(n.strip(), n.strip()) for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown configurations {unknown}: choose from {sorted(known)}")
    chosen = [known[n] for n in names]
    if args.big_snapshot:
        base = known["default"]
        chosen.append(Config("snapshot", f"{base.label} + a {args.big_snapshot}-listing "
                             f"snapshot of {BIG_GROUP} at the start", base.bulk_per_minute,
                             base.rentix, args.drain_s, args.big_snapshot))
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--per-group", type=int, default=20)
    parser.add_argument("--bulk-per-minute", type=int, default=BULK_PER_MINUTE)
    parser.add_argument("--configs", "--modes", default="default,bulk-only,put-only",
                        help="comma-separated: default, bulk-only, put-only, "
                             "default-no-ahead, bulk-only-no-ahead")
    parser.add_argument("--big-snapshot", type=int, default=5000,
                        help="listings of the fairness run's snapshot (0: no fairness run)")
    parser.add_argument("--window-ms", type=int, default=DEBOUNCE["window_ms"])
    parser.add_argument("--max-wait-ms", type=int, default=DEBOUNCE["max_wait_ms"])
    parser.add_argument("--drain-s", type=float, default=300,
                        help="longest wait after the last post (but put-only's)")
    parser.add_argument("--baseline-drain-s", type=float, default=60,
                        help="how long after the last post put-only is followed")
    parser.add_argument("--full-baseline", action="store_true",
                        help="follow put-only until it drains (several minutes)")
    args = parser.parse_args()
    count = int(args.rate * args.seconds)
    events = distinct_prices(list(event_stream(count, args.groups, args.per_group)))
    listings = len(final_state(events))
    debounce = {"window_ms": args.window_ms, "max_wait_ms": args.max_wait_ms}
    runs = []
    for config in configs(args):
        started = time.monotonic()
        runs.append(run_config(config, events, args.rate, debounce))
        print(f"[{config.name}: {time.monotonic() - started:.0f} s]", flush=True)
    print(f"\nEnd-to-end latency: {count} events at {args.rate:.0f}/s over {args.groups} groups "
          f"x {args.per_group} listings; sandbox at the documented "
          f"{DOCUMENTED_LIMITS['rentix_per_minute']} requests/min and "
          f"{DOCUMENTED_LIMITS['rentix_bulk_per_minute']} bulk/min; Rentix target at "
          f"{PUT_PER_MINUTE}/min, {args.bulk_per_minute} bulk/min; debounce window "
          f"{args.window_ms} ms, max_wait {args.max_wait_ms} ms")
    print(f"The bound the budgets set at this load: {listings} listings changed, each written "
          f"once at {PUT_PER_MINUTE} PUTs + {args.bulk_per_minute} bulks x {BULK_MAX_OPS} a "
          f"minute = {bound_s(listings, PUT_PER_MINUTE, args.bulk_per_minute):.1f} s "
          f"(bulks alone: {bound_s(listings, 0, args.bulk_per_minute):.1f} s; single PUTs "
          f"alone: {bound_s(listings, PUT_PER_MINUTE, 0):.0f} s)")
    max_wait_s = args.max_wait_ms / 1000
    for run in runs:
        print("\n".join(describe(run, max_wait_s)))
    plain = next((r for r in runs if r.config.name == "default"), None)
    loaded = next((r for r in runs if r.config.snapshot), None)
    if plain and loaded:
        print(fairness(plain, loaded))


if __name__ == "__main__":
    main()
