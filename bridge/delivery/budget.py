"""A per-listing target's two rate budgets as the portal last reported them.

Rentix answers every call with ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (Unix
seconds when the window ends); bulk answers describe the bulk bucket (30/min), every other
answer the general one (300/min). The adapter keeps the last seen per process
(``RentixAdapter.rate_limit`` and ``.bulk_rate_limit``); the delivery stores them in
``lb:target:{target}`` (``budget:general``, ``budget:bulk``) so every worker, the dashboard and
``bridge status`` see the same figures, and so a sender waits for a spent window to reset
instead of being refused.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import orjson

from bridge.constants import ks
from bridge.portals.rentix import RateLimitInfo

Bucket = Literal["general", "bulk"]
BUCKETS: tuple[Bucket, ...] = ("general", "bulk")
WINDOW_MS = 60_000  # Rentix's rate windows: "requests/minute", fixed windows


@dataclass(frozen=True)
class Budget:
    """One bucket as last reported: ``reset`` in Unix ms, ``at`` when it was seen."""

    limit: int | None
    remaining: int | None
    reset: int | None
    at: int

    def spent_until(self, now: int) -> int | None:
        """When the window resets, if the portal said it is spent and it has not reset yet."""
        if self.remaining is not None and self.remaining <= 0 and self.reset and \
                self.reset > now:
            return self.reset
        return None

    def paced_until(self, now: int, spacing_ms: float) -> int | None:
        """When the next request of this bucket may go, so that what the portal's window has
        left lasts until it resets (Unix ms); None when it may go now, or when no live window
        is known (the shared GCRA decides either way).

        It may go once what is left after it still covers the configured rate
        (``spacing_ms`` apart) until the reset, or, when the window has less than that, at
        its even share: the remaining requests spread from the answer that reported them to
        the reset. Rentix counts fixed 60-second windows; without this, the GCRA's burst spent
        a window of 30 bulks at 28 a minute ~7 s before it reset, every minute, and every bulk
        stopped until then: a hole each waiting listing carried in its latency (measured,
        issue 30). A reset further off than one window (and the second the portal rounds it
        up by: a clock apart from the portal's) counts as that far away."""
        if self.remaining is None or not self.reset or self.reset <= now:
            return None
        if self.remaining <= 0:
            return self.reset
        end = min(self.reset, self.at + WINDOW_MS + 1_000)  # the reset is in whole seconds
        covered = end - math.floor(self.remaining * spacing_ms)
        even = self.at + math.ceil(max(0, end - self.at) / self.remaining)
        due = min(covered, even)
        return due if due > now else None

    def as_json(self) -> dict[str, int | None]:
        return asdict(self)


def field(bucket: Bucket) -> str:
    return f"budget:{bucket}"


def from_headers(info: RateLimitInfo, at: int) -> Budget | None:
    """The adapter's last headers of one bucket; None until it has seen any."""
    if info.limit is None and info.remaining is None:
        return None
    reset = int(info.reset * 1000) if info.reset else None
    return Budget(info.limit, info.remaining, reset, at)


def command(target: str, budgets: dict[Bucket, Budget | None]) -> tuple[str, ...] | None:
    """The HSET that stores what was seen (None when nothing was)."""
    pairs = [x for bucket, budget in budgets.items() if budget is not None
             for x in (field(bucket), orjson.dumps(budget.as_json()).decode())]
    return ("HSET", f"{ks().TARGET}{target}", *pairs) if pairs else None


def parse(state: dict[str, str]) -> dict[Bucket, Budget]:
    """The budgets in a target's ``lb:target:{target}`` hash (as ``Ledger.target_state``)."""
    found: dict[Bucket, Budget] = {}
    for bucket in BUCKETS:
        raw = state.get(field(bucket))
        if not raw:
            continue
        try:
            data = orjson.loads(raw)
            found[bucket] = Budget(data.get("limit"), data.get("remaining"), data.get("reset"),
                                   int(data.get("at") or 0))
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            continue  # a damaged field reads as "not reported"
    return found


def spent_until(budgets: dict[Bucket, Budget], now: int, *buckets: Bucket) -> int | None:
    """The latest reset among the named buckets the portal reported spent, if any."""
    times = [t for b in buckets if (budget := budgets.get(b)) is not None
             and (t := budget.spent_until(now)) is not None]
    return max(times) if times else None
