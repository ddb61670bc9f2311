"""What an operator reads in the log (issue 28, item 3): one line for each event they act on
(a change held, a listing quarantined, a target paused or resumed and by whom, an operator's
release, retry or discard), with its group, target and listing as JSON fields. A real flush, in
process, against the sandbox (the fixtures of test_guards_everywhere)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from bridge.logs import JSONFormatter
from tests.delivery.test_guards_everywhere import (  # noqa: F401
    GROUP,
    Bridge,
    bridge,
    truncated_snapshot,
    twenty_on_both,
)
from tests.support import crm

# Real flushes in this process against the sandbox (tests/support/tiers.py).
pytestmark = pytest.mark.flows

FORMAT = JSONFormatter()


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


def lines(caplog: pytest.LogCaptureFixture, *words: str) -> list[dict[str, Any]]:
    """The bridge's own log lines, as ``--log-format json`` writes them, that say ``words``."""
    entries = [orjson.loads(FORMAT.format(record)) for record in caplog.records
               if record.name.startswith("bridge.")]
    return [entry for entry in entries if all(word in entry["message"] for word in words)]


def fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {name: entry[name] for name in ("group", "target", "listing") if name in entry}


async def test_a_held_change_and_its_release_are_one_line_each(
    bridge: Bridge, logged: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    await twenty_on_both(bridge)
    await truncated_snapshot(bridge)
    await bridge.flush()  # judged again, still held: nothing new to say
    held = lines(logged, "holding the deletions")
    assert sorted(e["target"] for e in held) == ["rentix", "travtus"], held
    assert {e["group"] for e in held} == {GROUP}

    [change] = await bridge.ops.held_changes()
    await bridge.ops.release(None, GROUP, change.digest)
    [released] = lines(logged, "an operator released")
    assert change.digest in released["message"] and "rentix, travtus" in released["message"]
    assert fields(released) == {"group": GROUP} and released["level"] == "INFO"


async def test_an_operators_discard_of_a_held_change_is_one_line(
    bridge: Bridge, logged: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    await twenty_on_both(bridge)
    await truncated_snapshot(bridge)
    [change] = await bridge.ops.held_changes()
    await bridge.ops.discard("travtus", GROUP, change.digest)
    [discarded] = lines(logged, "an operator discarded")
    assert fields(discarded) == {"group": GROUP, "target": "travtus"}


async def test_a_quarantined_listing_and_the_operators_retry_and_discard(
    bridge: Bridge, logged: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    # Travtus has no unit type for a house: refused locally, for Travtus alone.
    await bridge.post(crm.upsert(GROUP, "apt-1", 1, property_subtype="house", bedrooms=3))
    await bridge.flush()
    await bridge.post(crm.upsert(GROUP, "apt-2", 1))
    await bridge.flush()  # the group flushes again: apt-1 stays quarantined, not said again
    [quarantined] = lines(logged, "quarantined")
    assert fields(quarantined) == {"group": GROUP, "target": "travtus", "listing": "apt-1"}
    assert quarantined["level"] == "INFO"

    await bridge.ops.retry("travtus", ["apt-1"])
    [retried] = lines(logged, "an operator retried")
    assert fields(retried) == {"target": "travtus", "listing": "apt-1"}
    await bridge.flush()  # refused again
    assert len(lines(logged, "quarantined apt-1")) == 2
    await bridge.ops.discard_quarantined("travtus", ["apt-1"])
    [discarded] = lines(logged, "an operator discarded")
    assert fields(discarded) == {"target": "travtus", "listing": "apt-1"}


async def test_pauses_say_who_paused_and_resumes_are_one_line(
    bridge: Bridge, logged: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    (await bridge.portals.post("/credentials", json={"rentix_api_key": "rotated"})
     ).raise_for_status()
    await bridge.post(crm.upsert(GROUP, "apt-1", 1))
    await bridge.flush()
    [paused] = lines(logged, "pausing rentix")
    assert "by the bridge: credentials refused" in paused["message"]
    assert fields(paused) == {"group": GROUP, "target": "rentix"}

    await bridge.ops.resume("rentix")
    await bridge.ops.pause("travtus")
    [resumed] = lines(logged, "resuming rentix")
    assert "by an operator" in resumed["message"] and fields(resumed) == {"target": "rentix"}
    [by_operator] = lines(logged, "pausing travtus")
    assert "by an operator" in by_operator["message"]
    assert fields(by_operator) == {"target": "travtus"}
