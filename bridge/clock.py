"""The bridge's one clock: Unix milliseconds, as every Redis key and record stores time."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
