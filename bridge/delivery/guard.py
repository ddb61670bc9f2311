"""The guards' one decision per group flush (contract §5).

Every target's turn plans its own calls (a group sync, single PUTs or hides, a bulk) and says
what they would remove from the group (a :class:`Proposal`). The guards then judge the group's
change once, from every proposal together, with the same rules whatever the call shape: a turn
waits at :meth:`GroupGuard.judge` until every other turn has proposed or ended. What the verdict
holds is held on every target that would remove something; the rest of the change still flows.

A held change is named by its digest (:func:`change_digest`): the deletions and their causes,
the same on every target and in every flush while they stand, so an operator's release or
discard of that digest applies on every target it holds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bridge.clock import now_ms
from bridge.delivery.idempotency import digest
from bridge.delivery.ledger import Deletion, Held
from bridge.delivery.planning import guard_reason
from bridge.settings import GuardSettings


@dataclass(frozen=True)
class Proposal:
    """What one target's turn would remove from the group."""

    deletions: list[Deletion]
    listings: int  # the group's listings on the target afterwards
    size: int  # the group's listings on the target now (the fraction's denominator)
    forced: str | None = None  # held whatever the limits say (an operator must decide)
    unknown: list[str] = field(default_factory=list)  # on the portal, never sent there

    @property
    def removes(self) -> bool:
        return bool(self.deletions) or not self.listings


@dataclass(frozen=True)
class Verdict:
    """The guards' decision on the group's change: held (``reason``) or not."""

    reason: str | None
    digest: str
    deletions: list[Deletion]
    listings: int
    targets: list[str]  # the targets that would remove something
    unknown: list[str] = field(default_factory=list)

    @property
    def refs(self) -> set[str]:
        return {d.ref for d in self.deletions}

    def holds(self, target: str) -> bool:
        return self.reason is not None and target in self.targets

    def held(self) -> Held:
        """The entry an operator reviews, the same on every target it holds."""
        return Held(self.digest, self.reason or "", [d.ref for d in self.deletions],
                    self.listings, now_ms(), self.unknown,
                    [{"ref": d.ref, "cause": d.cause, "reason": d.reason}
                     for d in self.deletions])


NOTHING = Verdict(None, "", [], 0, [])


def change_digest(group: str, deletions: list[Deletion]) -> str:
    """Names a held change: its deletions and their causes (not the calls that carry them)."""
    return digest({"group": group, "deletions": [[d.ref, d.cause] for d in deletions]})


def judge(group: str, proposals: dict[str, Proposal], guard: GuardSettings) -> Verdict:
    """One decision from every target's proposal: the deletions of any target (by ref, the
    first target's cause in name order, so the digest is stable), the fewest listings any
    target would keep, the largest group any target holds."""
    removing = {name: proposals[name] for name in sorted(proposals)
                if proposals[name].removes}
    if not removing:
        return NOTHING
    merged: dict[str, Deletion] = {}
    for proposal in removing.values():
        for deletion in proposal.deletions:
            merged.setdefault(deletion.ref, deletion)
    deletions = [merged[ref] for ref in sorted(merged)]
    listings = min(p.listings for p in removing.values())
    size = max(p.size for p in removing.values()) or len(deletions)
    reason = guard_reason(deletions, listings, size, guard)
    forced = [p.forced for p in removing.values() if p.forced]
    if forced:
        reason = "; ".join(forced) + (f" (and {reason})" if reason else "")
    unknown = sorted({ref for p in removing.values() for ref in p.unknown})
    return Verdict(reason, change_digest(group, deletions), deletions, listings,
                   list(removing), unknown)


class GroupGuard:
    """Where a flush's turns meet for the one decision: each proposes (or leaves, when it has
    nothing to judge or ends early); the last to do so decides for all."""

    def __init__(self, group: str, targets: list[str], guard: GuardSettings) -> None:
        self.group = group
        self.guard = guard
        self._waiting = set(targets)
        self._proposals: dict[str, Proposal] = {}
        self._decided = asyncio.Event()
        self._verdict = NOTHING

    async def judge(self, target: str, proposal: Proposal) -> Verdict:
        self._proposals[target] = proposal
        self.leave(target)
        await self._decided.wait()
        return self._verdict

    def leave(self, target: str) -> None:
        """``target`` proposes nothing more in this flush (called again: no effect)."""
        self._waiting.discard(target)
        if not self._waiting and not self._decided.is_set():
            self._verdict = judge(self.group, self._proposals, self.guard)
            self._decided.set()
