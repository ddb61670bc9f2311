"""What both read-back comparisons share: the difference record, the pace hook, and value
equality with the normalisation every portal applies (numbers as numbers, empty as absent).

The comparisons themselves (`rentix_readback`, `travtus_readback`) are pure: they take OUR
mapped payload (what `map_listing` gives and the ledger records) and the portal's read-model
item, and say which of our fields the portal does not hold as we sent them.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bridge.portals.outcomes import Outcome, Result

# Awaited before each HTTP request of a read, so the caller can rate-limit per page.
Pace = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class FieldDifference:
    """One field of our payload the portal holds otherwise. `field` is named in OUR payload's
    vocabulary (e.g. Travtus `number_of_bathrooms`, not `full_bathrooms`); `theirs` is what
    the read model shows for it (None: nothing)."""

    field: str
    ours: Any
    theirs: Any


async def paced(pace: Pace | None) -> None:
    if pace is not None:
        await pace()


def unexpected_page(result: Result, expected: str) -> Result:
    """A 2xx that is not the page asked for (a proxy's page, a changed API): worth a retry,
    never to be read as an empty portal."""
    return Result(Outcome.TRANSIENT, status=result.status, error_type="unexpected_body",
                  message=f"expected {expected}, got {str(result.body)[:200]!r}",
                  body=result.body, latency_ms=result.latency_ms)


def is_empty(value: Any) -> bool:
    """None, "", [] and {} all mean "not set": portals clear and echo absent fields variously."""
    return value is None or (isinstance(value, str | list | tuple | dict) and not value)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def same(ours: Any, theirs: Any) -> bool:
    """Equal as the portal means it: 500 == 500.0 == Decimal("500"), empty == absent,
    dicts key by key (absent keys as empty), lists item by item in order."""
    if is_empty(ours) or is_empty(theirs):
        return is_empty(ours) and is_empty(theirs)
    if is_number(ours) and is_number(theirs):
        return math.isclose(float(ours), float(theirs), rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return all(same(ours.get(key), theirs.get(key)) for key in ours.keys() | theirs.keys())
    if isinstance(ours, list | tuple) and isinstance(theirs, list | tuple):
        return len(ours) == len(theirs) and all(map(same, ours, theirs))
    if isinstance(ours, bool) or isinstance(theirs, bool):
        return ours is theirs
    return type(ours) is type(theirs) and bool(ours == theirs)


def same_set(ours: Any, theirs: Any) -> bool:
    """Lists of tags (amenities, features), where order carries no meaning."""
    if not isinstance(ours, list | tuple) or not isinstance(theirs, list | tuple):
        return same(ours, theirs)
    return same(sorted(map(str, ours)), sorted(map(str, theirs)))


def same_flag(ours: Any, theirs: Any) -> bool:
    """A boolean never set reads as false (a portal may default it rather than clear it)."""
    return bool(ours) is bool(theirs) if _flag(ours) and _flag(theirs) else same(ours, theirs)


def _flag(value: Any) -> bool:
    return value is None or isinstance(value, bool)


def same_date(ours: Any, theirs: Any) -> bool:
    """`YYYY-MM-DD`, also when the portal answers a timestamp on that day."""
    if isinstance(ours, str) and isinstance(theirs, str) and len(ours) == 10:
        return theirs[:10] == ours and (len(theirs) == 10 or theirs[10:11] in ("T", " "))
    return same(ours, theirs)
