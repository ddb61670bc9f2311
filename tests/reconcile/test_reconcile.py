"""``bridge reconcile`` against the sandbox over HTTP, the portals' own state as the witness:
hand edits and hand deletions are found and repaired, unknown listings are reported and never
touched, and a second run finds nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import crm
from tests.support.stack import Stack, running_stack

# The tier of every test here (tests/support/tiers.py).
pytestmark = pytest.mark.processes

RENTIX = {"Authorization": "ApiKey sandbox"}


def reconcile(stack: Stack, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                   dict[str, Any]]:
    report = stack.config.parent / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "reconcile", "--config", str(stack.config),
         "--report", str(report), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result, json.loads(report.read_text())


def kinds(report: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(f["target"], f["ref"]): f["kind"] for f in report["findings"]}


def deliver(stack: Stack, group: str, count: int) -> None:
    for i in range(count):
        stack.post(crm.upsert(group, f"{group}-{i}", 1))
    stack.wait(lambda: len(stack.travtus_listings(group)) == count
               and len([r for r in stack.rentix_listings() if r.startswith(f"{group}-")])
               == count, what="delivery to both portals")


def rentix_put(stack: Stack, body: dict[str, Any]) -> None:
    answer = stack.sandbox.put("/rentix/api/v1/listings", json=body, headers=RENTIX)
    assert answer.status_code == 200, answer.text


def test_hand_edits_and_a_hand_deletion_are_found_and_repaired_and_a_second_run_finds_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path, workers=0) as stack:
        stack.start_worker()
        deliver(stack, "hand", 3)
        stack.stop_workers()  # nothing but reconcile writes from here on
        # A hand edit on each portal, and a listing deleted by hand on Rentix.
        rentix_put(stack, {"externalId": "hand-0", "announcementValue": 999})
        travtus_edit = crm.listing("hand-1", 1, deposit=1)
        from bridge.portals import TravtusAdapter

        mapped = TravtusAdapter("travtus", "http://127.0.0.1:9", "http://127.0.0.1:9/t",
                                "i", "s").map_listing(travtus_edit)
        seeded = stack.sandbox.post("/_sandbox/travtus/listings",
                                    json={"group": "hand", "listings": [mapped]})
        assert seeded.status_code == 200, seeded.text
        gone = stack.sandbox.post("/rentix/api/v1/listings/bulk", headers=RENTIX, json={
            "operations": [{"op": "delete", "externalId": "hand-2"}]})
        assert gone.status_code == 200, gone.text

        dry, report = reconcile(stack)
        assert kinds(report) == {("rentix", "hand-0"): "drift",
                                 ("travtus", "hand-1"): "drift",
                                 ("rentix", "hand-2"): "missing"}
        assert "add --apply" in dry.stdout
        assert stack.rentix_listings()["hand-0"]["formData"]["announcementValue"] == 999

        _, report = reconcile(stack, "--apply")
        assert report["repaired"] == {"missing": 1, "drift": 2, "stale": 0, "unknown": 0}
        # Each repair confirmed by reading the portal back; nothing said to remain.
        assert {f["ref"]: f["outcome"] for f in report["findings"]} == dict.fromkeys(
            ["hand-0", "hand-1", "hand-2"], "repaired")
        assert all("read back" in f["why"] for f in report["findings"])
        assert report["remaining"] == {"missing": 0, "drift": 0, "stale": 0, "unknown": 0}
        on_rentix = stack.rentix_listings()
        assert on_rentix["hand-0"]["formData"]["announcementValue"] == 500
        assert "hand-2" in on_rentix
        assert stack.travtus_listings("hand")["hand-1"]["lease_terms"][0]["deposit"] == 500

        _, again = reconcile(stack)
        assert again["findings"] == [], again


def test_a_hand_made_unlinked_listing_is_reported_as_unknown_and_never_touched(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        deliver(stack, "known", 1)
        made = stack.sandbox.post("/_sandbox/rentix/listings",
                                  json={"listings": [crm.hand_made()]})
        assert made.status_code == 200, made.text
        [portal_id] = made.json()["ids"]
        stack.sandbox.post("/_sandbox/travtus/listings", json={"group": "known", "listings": [
            {"external_reference": "by-hand", "unit_type": "apartment", "number_of_bathrooms": 1,
             "listing_url": "https://x.example/by-hand"}]})
        before = stack.journal()
        _, report = reconcile(stack, "--apply")
        found = kinds(report)
        assert found[("rentix", f"#{portal_id}")] == "unknown"
        assert found[("travtus", "by-hand")] == "unknown"
        writes = [r for r in stack.journal()[len(before):] if r["method"] in ("PUT", "DELETE")
                  or r["path"].endswith(("/sync/", "/bulk"))]
        assert writes == []  # reported, never touched
        assert "by-hand" in stack.travtus_listings("known")


def test_reads_are_paced_to_their_share_of_the_rate_limit(
    redis_url: str, tmp_path: Path
) -> None:
    # 600 requests a minute, reads at most 10 % of it: one a second after a burst of 5.
    with running_stack(redis_url, tmp_path, rentix_per_minute=600,
                       reconcile={"read_share": 0.1}) as stack:
        deliver(stack, "paced", 9)
        stack.stop_workers()
        started = len(stack.journal())
        # One group: Rentix is read by external ID, one call per listing.
        _, report = reconcile(stack, "--target", "rentix", "--group", "paced")
        reads = [r for r in stack.journal()[started:] if r["method"] == "GET"]
        assert report["reads"]["rentix"] == len(reads) == 9
        times = sorted(_at(r) for r in reads)
        # Five at once, then one a second: the last of nine no sooner than ~4 s after the first.
        assert times[-1] - times[0] >= 3.5, times
        assert not [r for r in stack.journal() if r["status"] == 429]
        assert report["findings"] == []


def _at(request: dict[str, Any]) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(request["at"].replace("Z", "+00:00")).timestamp()
