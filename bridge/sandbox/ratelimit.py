"""Fixed-window rate limiting (Rentix): per key, 60-second windows opened by the first request."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

WINDOW_S = 60


@dataclass
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # Unix seconds when the window ends

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


class RateLimiter:
    def __init__(self) -> None:
        # bucket -> [window start (Unix seconds), requests counted in it]
        self._windows: dict[str, list[float]] = {}

    def acquire(self, buckets: list[tuple[str, int]], now: float | None = None) -> Decision:
        """Count one request in every bucket, or in none if any is full.

        The answer describes the first full bucket, else the last (most specific) one.
        """
        now = time.time() if now is None else now
        windows = [self._window(name, now) for name, _ in buckets]
        for window, (_, limit) in zip(windows, buckets, strict=True):
            if window[1] >= limit:
                return Decision(False, limit, 0, math.ceil(window[0] + WINDOW_S))
        for window in windows:
            window[1] += 1
        window, (_, limit) = windows[-1], buckets[-1]
        remaining = max(0, limit - int(window[1]))
        return Decision(True, limit, remaining, math.ceil(window[0] + WINDOW_S))

    def _window(self, name: str, now: float) -> list[float]:
        window = self._windows.get(name)
        if window is None or now >= window[0] + WINDOW_S:
            window = [now, 0]
            self._windows[name] = window
        return window
