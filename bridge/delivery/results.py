"""What one flush of one group came to: :class:`FlushResult`, its :class:`FlushOutcome` typed
(the flush counters read it), its text (``"g1: done"``) only for logs and arq's job record."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class FlushOutcome(Enum):
    """How a flush ended; the value is its wording in logs."""

    DONE = "done"  # nothing left to do: every target settled the claim, none due again
    MORE_TO_DO = "more to do"  # the group is due again (backoff, rate limit, deadline, held)
    TAKEN = "another flush holds it"  # not claimed: nothing was done
    LEASE_LOST = "lease lost"  # another flush took the group meanwhile

    @property
    def counted_as(self) -> str:
        """The ``result`` label of ``flushes_total`` for a run that returned this."""
        return "done" if self is FlushOutcome.DONE else "more_to_do"


@dataclass(frozen=True)
class FlushResult:
    group: str
    outcome: FlushOutcome

    @property
    def done(self) -> bool:
        return self.outcome is FlushOutcome.DONE

    def __str__(self) -> str:
        return f"{self.group}: {self.outcome.value}"
