"""Figures from what the webhook and the workers count: per-minute series and their totals,
latency percentiles, and a target's rate-limit budget. Pure functions over values read from
Redis (``lb:stats:{minute}``, ``lb:latency``, ``lb:ratelimit:{target}``)."""

from __future__ import annotations

import math

from bridge.ops.models import Figures, Latency, RateBudget, Series, Totals

RATE_BURST = 5  # RateLimiter.acquire's burst: the budget a target has when idle
RETRYING = {"transient", "rate_limited", "token_expired"}  # outcomes the bridge retries itself
OUTCOME_CLASSES = ("ok", "retrying", "failed")


def series(rows: list[dict[str, int]], targets: list[str]) -> Figures:
    """Per-minute lists from the ``lb:stats:{minute}`` hashes (see ``bridge/constants.py``),
    one row per minute, oldest first."""
    events = {name: [row.get(name, 0) for row in rows]
              for name in ("received", "duplicate", "stale")}
    reasons = sorted({f.split(":", 1)[1] for row in rows for f in row
                      if f.startswith("rejected:")})
    rejected = {r: [row.get(f"rejected:{r}", 0) for row in rows] for r in reasons}
    deliveries = {target: _deliveries(rows, target) for target in targets}
    calls = {target: [row.get(f"calls:{target}", 0) for row in rows] for target in targets}
    return Figures(events=events, rejected=rejected, deliveries=deliveries, calls=calls)


def _deliveries(rows: list[dict[str, int]], target: str) -> Series:
    """A target's attempts per minute by class: fields are ``{outcome}:{target}``."""
    by_class: Series = {cls: [] for cls in OUTCOME_CLASSES}
    for row in rows:
        counts = dict.fromkeys(OUTCOME_CLASSES, 0)
        for field, value in row.items():
            outcome, _, name = field.rpartition(":")
            if name == target and outcome not in ("calls", "rejected", ""):
                counts[outcome_class(outcome)] += value
        for cls, value in counts.items():
            by_class[cls].append(value)
    return by_class


def outcome_class(outcome: str) -> str:
    if outcome == "ok":
        return "ok"
    return "retrying" if outcome in RETRYING else "failed"


def totals(figures: Figures) -> Totals:
    return Totals(
        events={n: sum(v) for n, v in figures.events.items()},
        rejected={n: sum(v) for n, v in figures.rejected.items()},
        deliveries={t: {c: sum(v) for c, v in by.items()}
                    for t, by in figures.deliveries.items()},
        calls={t: sum(v) for t, v in figures.calls.items()},
    )


def calls_per_event(figures: Figures) -> dict[str, float | None]:
    """Portal calls per accepted event over the window: how well changes are coalesced."""
    received = sum(figures.events["received"])
    return {t: round(sum(v) / received, 3) if received else None
            for t, v in figures.calls.items()}


def latency(values: list[int]) -> Latency:
    ordered = sorted(values)
    return Latency(samples=len(ordered), p50=percentile(ordered, 50),
                   p95=percentile(ordered, 95), p99=percentile(ordered, 99))


def percentile(ordered: list[int], q: int) -> int | None:
    """Nearest rank over sorted values; None with none."""
    if not ordered:
        return None
    return ordered[max(1, math.ceil(q * len(ordered) / 100)) - 1]


def budget(tat: float | None, per_minute: int, now: int) -> RateBudget:
    """Requests a target may make at once now, from the shared GCRA state
    (``bridge/delivery/ratelimit.py``): each spent request pushes the arrival time one
    interval on."""
    interval = 60_000 / per_minute
    ahead = max(0.0, (tat or now) - now)
    available = max(0, min(RATE_BURST, RATE_BURST - math.ceil(ahead / interval)))
    return RateBudget(requests_per_minute=per_minute, burst=RATE_BURST, available=available,
                      next_in_ms=0 if available else math.ceil(ahead - interval * (RATE_BURST - 1)))
