"""The suite's tiers, and a check that keeps them honest.

Every test is in one or more tiers, named by pytest markers (registered in ``pyproject.toml``
and enforced by ``--strict-markers``):

    unit         nothing outside the test process (added to every test in no other tier)
    redis        the session's Redis-compatible server (added to every test that uses it)
    servers      starts Redis-compatible servers of its own (to stop, freeze or misconfigure)
    processes    starts bridge processes: ``bridge serve``/``worker``/``dev``, CLI commands
    browser      drives Debian's headless Chromium
    prometheus   runs promtool or a real Prometheus
    flows        real flushes in this process against the sandbox over HTTP (seconds each)
    model        the state machine against its model (tests/model/: Hypothesis, a minute)

``./scripts/test --fast`` runs the first two: the inner loop, about a minute on two cores.
The markers from ``servers`` to ``prometheus`` are written on the tests; a test that starts
such a process without its marker fails at that line, so the fast tier never silently grows
slow. ``flows`` and ``model`` are written on their modules.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

MARKED = ("servers", "processes", "browser", "prometheus")
ALL = ("unit", "redis", *MARKED, "flows", "model")
SERVERS = ("redis-server", "valkey-server")
# The tiers that `./scripts/test --fast` leaves out besides `servers`.
SLOWER = ("processes", "browser", "prometheus", "flows", "model")


def tier_of(args: Any) -> str | None:
    """Which marked tier a process started with `args` belongs to, if any."""
    argv = [args] if isinstance(args, str | bytes | os.PathLike) else list(args)
    words = [os.fsdecode(a) for a in argv]
    program = os.path.basename(words[0]) if words else ""
    if "chrom" in program:
        return "browser"
    if program in ("promtool", "prometheus"):
        return "prometheus"
    if program == "bridge" or "bridge.cli" in words:
        return "processes"
    if program in SERVERS and not _session_server:
        return "servers"
    return None


_session_server = False  # the session's own server is starting: every test's, no tier


@contextlib.contextmanager
def session_server() -> Iterator[None]:
    """Around (re)starting the session's server, which is no test's own."""
    global _session_server
    _session_server = True
    try:
        yield
    finally:
        _session_server = False


class TierError(Exception):
    """A test started a process of a tier it is not marked with."""


_running: list[pytest.Item] = []
_popen_init = subprocess.Popen.__init__


def _checked_init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
    tier = tier_of(args)
    item = _running[-1] if _running else None
    if tier == "servers" and item is not None and any(
            item.get_closest_marker(name) for name in SLOWER):
        tier = None  # outside the fast tier already: its own servers need no mark of their own
    if tier and item is not None and item.get_closest_marker(tier) is None:
        command = " ".join(map(str, [args] if isinstance(args, str) else args))
        raise TierError(f"{item.nodeid} starts a process of the {tier} tier ({command[:80]}): "
                        f"mark the test @pytest.mark.{tier}")
    _popen_init(self, args, *rest, **kwargs)


def install() -> None:
    subprocess.Popen.__init__ = _checked_init  # type: ignore[method-assign]


def add_automatic_markers(items: Sequence[pytest.Item]) -> None:
    for item in items:
        if "redis_srv" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.redis)
        if not any(item.get_closest_marker(name) for name in ALL if name != "unit"):
            item.add_marker(pytest.mark.unit)


def running(item: pytest.Item | None) -> None:
    """Which test is running now (None between tests)."""
    _running.clear()
    if item is not None:
        _running.append(item)
