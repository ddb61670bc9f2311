"""The dashboard's figures (bridge.ops.figures) from per-minute counter rows: pure functions."""

from __future__ import annotations

from bridge.ops import figures
from bridge.ops.models import Latency, RateBudget

ROWS = [
    {"received": 2, "calls:rentix": 2, "ok:rentix": 1, "transient:rentix": 1},
    {},
    {"received": 1, "duplicate": 1, "rejected:invalid_signature": 3, "calls:rentix": 1,
     "data_invalid:rentix": 1, "ok:travtus": 1, "calls:travtus": 1},
]


def test_series_split_deliveries_by_result_class_per_target() -> None:
    series = figures.series(ROWS, ["rentix", "travtus"])
    assert series.events == {"received": [2, 0, 1], "duplicate": [0, 0, 1], "stale": [0, 0, 0]}
    assert series.rejected == {"invalid_signature": [0, 0, 3]}
    assert series.deliveries["rentix"] == {"ok": [1, 0, 0], "retrying": [1, 0, 0],
                                           "failed": [0, 0, 1]}
    assert series.deliveries["travtus"] == {"ok": [0, 0, 1], "retrying": [0, 0, 0],
                                            "failed": [0, 0, 0]}
    assert series.calls == {"rentix": [2, 0, 1], "travtus": [0, 0, 1]}


def test_totals_and_calls_per_received_event() -> None:
    series = figures.series(ROWS, ["rentix", "travtus"])
    totals = figures.totals(series)
    assert totals.events == {"received": 3, "duplicate": 1, "stale": 0}
    assert totals.deliveries["rentix"] == {"ok": 1, "retrying": 1, "failed": 1}
    assert totals.calls == {"rentix": 3, "travtus": 1}
    assert figures.calls_per_event(series) == {"rentix": 1.0, "travtus": 0.333}
    quiet = figures.series([{}], ["rentix"])
    assert figures.calls_per_event(quiet) == {"rentix": None}


def test_latency_percentiles_are_nearest_rank_and_none_before_any_delivery() -> None:
    assert figures.latency([]) == Latency(samples=0, p50=None, p95=None, p99=None)
    values = list(range(100, 0, -1))  # the latency list is newest first, not sorted
    assert figures.latency(values) == Latency(samples=100, p50=50, p95=95, p99=99)
    assert figures.latency([7]) == Latency(samples=1, p50=7, p95=7, p99=7)


def test_rate_budget_follows_the_shared_arrival_time() -> None:
    now, per_minute = 1_000_000, 60  # one request a second
    assert figures.budget(None, per_minute, now) == RateBudget(60, figures.RATE_BURST, 5, 0)
    assert figures.budget(now + 2_000, per_minute, now).available == 3  # two spent
    spent = figures.budget(now + 5_000, per_minute, now)
    assert (spent.available, spent.next_in_ms) == (0, 1_000)
