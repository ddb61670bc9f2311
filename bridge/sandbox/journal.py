"""The journal: every request either portal answered, in the order the answers were sent."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

# Bounded so a long load test cannot exhaust memory; `seq` keeps counting past the cap.
JOURNAL_CAP = 200_000


@dataclass
class JournalEntry:
    seq: int
    portal: str
    method: str
    path: str  # below the portal root, like fault paths
    query: str
    status: int
    idempotency_key: str | None
    replayed: bool
    body: Any
    at: str  # when the request arrived
    duration_ms: float
    # The client went away before its body arrived whole: nothing was applied or answered,
    # `status` is 499 (nginx's "client closed request") and `body` is None.
    cut_off: bool = False


class Journal:
    def __init__(self, cap: int = JOURNAL_CAP) -> None:
        self._entries: deque[JournalEntry] = deque(maxlen=cap)
        self._seq = 0

    def record(self, **fields: Any) -> JournalEntry:
        self._seq += 1
        entry = JournalEntry(seq=self._seq, **fields)
        self._entries.append(entry)
        return entry

    def entries(self, portal: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        return [
            asdict(e)
            for e in self._entries
            if e.seq > since and (portal is None or e.portal == portal)
        ]
