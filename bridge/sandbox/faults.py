"""Injected faults: error answers, latency and timed outages, matched by portal, method and path."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

PORTALS = ("rentix", "travtus")


class FaultSpecError(ValueError):
    """The admin API was given a fault it cannot use."""


@dataclass
class Fault:
    id: int
    portal: str
    method: str | None
    path: str | None
    status: int | None
    body: Any
    headers: dict[str, str]
    latency_ms: float
    remaining: int | None  # None: unlimited
    until: float | None  # monotonic deadline; None: no end
    created: float = field(default_factory=time.monotonic)

    def live(self, now: float) -> bool:
        return (self.remaining is None or self.remaining > 0) and (
            self.until is None or now < self.until
        )

    def matches(self, portal: str, method: str, path: str) -> bool:
        return (
            self.portal == portal
            and (self.method is None or self.method == method)
            and (self.path is None or path.startswith(self.path))
        )

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id, "portal": self.portal, "method": self.method, "path": self.path,
            "status": self.status, "body": self.body, "headers": self.headers,
            "latency_ms": self.latency_ms, "count": self.remaining,
        }


class Faults:
    def __init__(self) -> None:
        self._faults: dict[int, Fault] = {}
        self._ids = itertools.count(1)

    def add(self, spec: dict[str, Any]) -> Fault:
        fault = _build(next(self._ids), spec)
        self._faults[fault.id] = fault
        return fault

    def remove(self, fault_id: int) -> bool:
        return self._faults.pop(fault_id, None) is not None

    def clear(self) -> None:
        self._faults.clear()

    def listing(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [f.describe() for f in self._faults.values() if f.live(now)]

    def take(self, portal: str, method: str, path: str) -> Fault | None:
        """The oldest live fault matching this request, using up one of its `count`."""
        if not self._faults:
            return None
        now = time.monotonic()
        for fault in list(self._faults.values()):
            if not fault.live(now):
                del self._faults[fault.id]
            elif fault.matches(portal, method, path):
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None


def _build(fault_id: int, spec: dict[str, Any]) -> Fault:
    portal = spec.get("portal")
    if portal not in PORTALS:
        raise FaultSpecError("portal must be one of: rentix, travtus")
    status = _optional(spec, "status", int)
    if status is not None and not 100 <= status <= 599:
        raise FaultSpecError("status must be an HTTP status code")
    latency = _optional(spec, "latency_ms", (int, float)) or 0
    count = _optional(spec, "count", int)
    duration = _optional(spec, "duration_s", (int, float))
    headers = spec.get("headers") or {}
    if not isinstance(headers, dict):
        raise FaultSpecError("headers must be an object")
    if status is None and not latency:
        raise FaultSpecError("a fault needs a status or a latency_ms")
    method = _optional(spec, "method", str)
    return Fault(
        id=fault_id,
        portal=portal,
        method=method.upper() if method else None,
        path=_optional(spec, "path", str),
        status=status,
        body=spec.get("body"),
        headers={str(k): str(v) for k, v in headers.items()},
        latency_ms=float(latency),
        remaining=count,
        until=time.monotonic() + duration if duration is not None else None,
    )


def _optional(spec: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise FaultSpecError(f"{name} has the wrong type")
    return value
