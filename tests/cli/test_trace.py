"""``bridge trace REF [--json]`` as a process against the whole bridge (real workers, the sandbox
portals): where the listing stands on each target (its latest accepted digest, in step or not),
then its story newest first; the JSON is the API's; an unknown listing is one plain line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support import crm
from tests.support.stack import Stack, running_stack

# The tier of every test here (tests/support/tiers.py).
pytestmark = pytest.mark.processes


def bridge_trace(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", "trace", *args, "--config",
                           str(stack.config)], capture_output=True, text=True, timeout=30)


def api_trace(stack: Stack, ref: str) -> dict[str, Any]:
    """The listing's story; empty until a worker has folded its first event."""
    response = stack.bridge.get(f"/api/listings/{ref}/trace")
    if response.status_code == 404:
        return {"entries": []}
    result: dict[str, Any] = response.json()
    return result


def calls(stack: Stack, ref: str) -> set[str]:
    return {e["target"] for e in api_trace(stack, ref)["entries"] if e["kind"] == "call"}


def test_bridge_trace_says_where_a_listing_stands_and_tells_its_story_newest_first(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        refusal = {"statusCode": 400, "message": ["propertyArea must be a number"],
                   "error": "Bad Request"}
        assert stack.sandbox.post("/_sandbox/faults", json={
            "portal": "rentix", "method": "PUT", "path": "/listings", "status": 400,
            "body": refusal, "count": 1}).status_code in (200, 201)
        stack.post(crm.upsert("cli", "apt-1", 4), "wh-cli")
        stack.wait(lambda: calls(stack, "apt-1") == {"rentix", "travtus"}
                   and any(e.get("decision") == "quarantined"
                           for e in api_trace(stack, "apt-1")["entries"]),
                   what="both portals told")
        text = bridge_trace(stack, "apt-1")
        as_json = bridge_trace(stack, "apt-1", "--json")
        api = api_trace(stack, "apt-1")
        unknown = bridge_trace(stack, "nope")

    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("listing apt-1 in group cli: live, version 4, occurred "
                               + crm.BASE.strftime("%Y-%m-%d %H:%M:%S.000 UTC"))
    travtus = api["targets"]["travtus"]
    assert lines[1].startswith("  rentix (rentix): quarantined; never accepted anything for it; "
                               "a flush would send ")
    assert lines[2] == (f"  travtus (travtus): in step; accepted {travtus['accepted_digest']} "
                        f"at {clock_of(lines[2])}")
    assert lines[3].startswith("story, newest first (entries kept 7 days, at most 200):")
    story = lines[4:]
    assert "event     listing.updated v4 in cli" in story[-1]
    assert story[-1].endswith(": applied; webhook-id wh-cli")
    rentix = [line for line in story if "rentix" in line]
    assert "decision  rentix: quarantined" in rentix[0] and "(propertyArea)" in rentix[0]
    assert "call      rentix: upsert -> 400 data_invalid" in rentix[1]
    assert "decision  rentix: sent upsert digest " in rentix[2]
    # Times run newest first, as the API's entries do.
    times = [line[2:29] for line in story]
    assert times == sorted(times, reverse=True) and len(story) == len(api["entries"])

    assert as_json.returncode == 0, as_json.stderr
    printed = orjson.loads(as_json.stdout)
    assert printed["entries"] == api["entries"] and printed["targets"] == api["targets"]

    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines()[-1] == (
        "Error: no listing 'nope' is known, and nothing about it happened in the last 7 days")


def clock_of(line: str) -> str:
    return line.rsplit(" at ", 1)[1]
