"""When each group's periodic check on each target falls due: spread evenly over the interval.

Every (target, group) has a fixed *phase*, a hash of its name modulo ``[reconcile] interval_s``,
and is checked at the times congruent to it: so 100,000 groups scheduled at once, or one at a
time as they appear, are spread over the interval alike, each checked once per interval. The
schedulers' sweep (:class:`TopUp`, ``top_up.lua``) computes the same slots (``slot.lua``) as
:func:`slot_ms` here.

A per-listing portal (Rentix) has one more check per pass, under the group ``WHOLE_PORTAL``:
its listings read page by page, for those no CRM listing is linked to (no group holds them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from redis.asyncio import Redis

from bridge import constants as k
from bridge import tenancy
from bridge.constants import ks
from bridge.replies import text
from bridge.scripts import Script, load
from bridge.settings import RentixTarget, TravtusTarget

WHOLE_PORTAL = ""  # not a group name: the CRM's groups are never empty

# A group seen for the first time is checked no sooner than this (its first delivery has only
# just gone out), and never later than one interval after that.
GRACE_MAX_MS = 600_000

# After a failed check: the first retry, doubling to at most this, and never beyond a pass.
BACKOFF_FIRST_MS = 30_000
BACKOFF_MAX_MS = 3_600_000

# One step of a sweep over lb:groups, scheduling the checks the targets lack (TopUp).
TOP_UP = load(__file__, "top_up.lua")


def name(target: str, group: str) -> str:
    """What the phase is a hash of (target names never hold ':'): the current tenant's, so
    1,000 tenants' daily checks of the same target and group name do not all fall due in
    the same millisecond (the tenant default keeps the names it always had)."""
    return f"{_tenant_part()}{target}:{group}"


def _tenant_part() -> str:
    tenant = tenancy.current()
    return "" if tenant == tenancy.DEFAULT else f"{tenant}/"


def phase_ms(target: str, group: str, interval_ms: int) -> int:
    digest = hashlib.sha1(name(target, group).encode(), usedforsecurity=False).hexdigest()
    return int(digest[:12], 16) % interval_ms


def slot_ms(target: str, group: str, interval_ms: int, after_ms: int) -> int:
    """The first time at or after ``after_ms`` at which the group's check is due."""
    return after_ms + (phase_ms(target, group, interval_ms) - after_ms) % interval_ms


def grace_ms(interval_ms: int) -> int:
    return min(interval_ms, GRACE_MAX_MS)


def first_due_ms(target: str, group: str, interval_ms: int, now: int) -> int:
    """When a group not yet scheduled is first checked."""
    return slot_ms(target, group, interval_ms, now + grace_ms(interval_ms))


def next_due_ms(target: str, group: str, interval_ms: int, now: int) -> int:
    """After a check: its next slot (the previous due time plus the interval, unless the check
    ran late by more than an interval)."""
    return slot_ms(target, group, interval_ms, now + 1)


def whole_portal(spec: RentixTarget | TravtusTarget) -> bool:
    """Whether a pass of ``spec`` also reads the portal as a whole (for unknown listings)."""
    return spec.mode == "per_listing"


class TopUp:
    """One step of a sweep over ``lb:groups`` (``top_up.lua``): each group a target's schedule
    (``lb:reconcile:due:{target}``) lacks gets its first slot, and one scheduled beyond any slot
    of the current interval (the interval was shortened) a slot within it."""

    def __init__(self, redis: Redis) -> None:
        self._top_up = Script(redis, TOP_UP)

    async def step(self, targets: Sequence[str], cursor: str, count: int, interval_ms: int,
                   now: int) -> tuple[str, int]:
        """The sweep's next cursor ("0": it is done) and how many checks were scheduled."""
        following, added = await self._top_up(
            keys=[ks().GROUPS, *(f"{ks().RECONCILE_DUE}{target}" for target in targets)],
            args=[cursor, count, now, interval_ms, grace_ms(interval_ms), k.RECONCILE_RETAKE_MS,
                  _tenant_part(), *targets])
        return text(following), int(added)
