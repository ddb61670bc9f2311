"""``bridge reconcile --apply`` says per listing what became of each finding, and its totals are
what an immediate rerun finds (issue 26, item 3): a repair the guards hold, or one an operator
discarded, or one to a paused target is reported as not repaired, with why; one that goes
through is confirmed by reading the portal back. A manual run's findings reach the dashboard's
Targets page, ``GET /api/drift`` and the overview, as the periodic pass's do.

Real parts only: the sandbox over HTTP, ``bridge worker`` and ``bridge reconcile`` processes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bridge.portals import TravtusAdapter
from tests.reconcile.test_reconcile import deliver, reconcile
from tests.support import crm
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.processes

KINDS = ("missing", "drift", "stale", "unknown")


def held(stack: Stack, group: str) -> dict[str, Any] | None:
    answer = stack.bridge.get("/api/problems").json()
    return next((h for h in answer["held"] if h["group"] == group), None)


def hand_edit_on_travtus(stack: Stack, group: str, refs: list[str]) -> None:
    """An agent changes the deposit of these listings on Travtus by hand."""
    adapter = TravtusAdapter("travtus", "http://127.0.0.1:9", "http://127.0.0.1:9/t", "i", "s")
    mapped = [adapter.map_listing(crm.listing(ref, 1, deposit=1)) for ref in refs]
    seeded = stack.sandbox.post("/_sandbox/travtus/listings",
                                json={"group": group, "listings": mapped})
    assert seeded.status_code == 200, seeded.text


def outcomes(report: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """ref -> (kind, outcome, why) of every finding."""
    return {f["ref"]: (f["kind"], f["outcome"], f["why"]) for f in report["findings"]}


def totals(report: dict[str, Any]) -> dict[str, int]:
    found = Counter(f["kind"] for f in report["findings"])
    return {kind: found[kind] for kind in KINDS}


def syncs(stack: Stack, since: int) -> list[dict[str, Any]]:
    return [r for r in stack.journal("travtus")[since:] if r["path"].endswith("/sync/")]


def assert_not_repaired(report: dict[str, Any], refs: dict[str, str], because: str) -> None:
    """Every one of ``refs`` (ref -> kind) not repaired, for the reason ``because`` names;
    nothing counted as repaired; what remains is what was found."""
    found = outcomes(report)
    assert {ref: found[ref][0] for ref in refs} == refs
    for ref in refs:
        _, outcome, why = found[ref]
        assert outcome == "not repaired" and because in why, (ref, outcome, why)
    assert report["repaired"] == {"missing": 0, "drift": 0, "stale": 0, "unknown": 0}
    assert report["remaining"] == report["totals"]


def test_repairs_the_guards_hold_or_an_operator_discarded_are_reported_not_repaired(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        deliver(stack, "kept", 20)
        # 15 hidden in the CRM: the sync would delete 15 of 20, and the guards hold it.
        for i in range(15):
            stack.post(crm.upsert("kept", f"kept-{i}", 2, status="hidden"))
        stack.wait(lambda: held(stack, "kept"), what="the sync held by the guards")
        stack.stop_workers()  # nothing but reconcile writes from here on
        hand_edit_on_travtus(stack, "kept", ["kept-15", "kept-16", "kept-17"])
        stale = {f"kept-{i}": "stale" for i in range(15)}
        drift = {f"kept-{i}": "drift" for i in (15, 16, 17)}

        before = len(stack.journal("travtus"))
        applied, report = reconcile(stack, "--apply", "--target", "travtus")
        # The guards hold the deletions alone (issue 26): the sync that repairs the hand edits
        # goes, keeping the 15 listings hidden in the CRM on Travtus for an operator.
        found = outcomes(report)
        for ref in drift:
            assert found[ref][:2] == ("drift", "repaired"), found[ref]
        for ref in stale:
            kind, outcome, why = found[ref]
            assert (kind, outcome) == ("stale", "not repaired"), found[ref]
            assert "held for an operator" in why, why
        assert report["repaired"] == {**dict.fromkeys(KINDS, 0), "drift": 3}
        assert "15 not repaired: 0 missing, 0 drift, 15 stale" in applied.stdout
        [sync] = syncs(stack, before)
        assert {item["external_reference"] for item in sync["body"]["listings"]} == {
            f"kept-{i}" for i in range(20)}
        _, rerun = reconcile(stack, "--target", "travtus")
        assert totals(rerun) == report["remaining"] == {**dict.fromkeys(KINDS, 0), "stale": 15}

        # The operator discards the held sync: the same repair is not sent again either.
        digest = (held(stack, "kept") or {})["digest"]
        answer = stack.bridge.post("/api/held/discard", json={
            "target": "travtus", "group": "kept", "digest": digest})
        assert answer.status_code == 200, answer.text
        before = len(stack.journal("travtus"))
        applied, report = reconcile(stack, "--apply", "--target", "travtus")
        assert_not_repaired(report, stale, "discarded")
        # Whatever it sends, no sync deletes what the operator chose to keep.
        assert all(len(sync["body"]["listings"]) == 20 for sync in syncs(stack, before))
        # The manual run is the group's last check, why included, though no pass has run.
        drift_view = {d["target"]: d for d in stack.bridge.get("/api/drift").json()["drift"]}
        [latest] = [c for c in drift_view["travtus"]["latest"] if c["group"] == "kept"]
        assert latest["source"] == "manual" and "discarded" in latest["not_repaired"]["kept-0"]
        assert latest["remaining"] == {**dict.fromkeys(KINDS, 0), "stale": 15}
        _, rerun = reconcile(stack, "--target", "travtus")
        assert totals(rerun) == report["remaining"]

        # The pages show what the manual runs found.
        stack.start_worker()
        stack.wait(lambda: "No worker has sent a heartbeat" not in
                   stack.bridge.get("/dashboard/").text, what="a live worker")
        overview = stack.bridge.get("/dashboard/").text
        assert "Nothing is stuck" not in overview
        assert "15 difference(s)" in overview and "travtus" in overview
        page = stack.bridge.get("/dashboard/targets").text
        row = page.split('id="drift-travtus"', 1)[1].split("</tr>", 1)[0]
        assert "none yet" not in row and "15 stale" in row, row


def test_a_paused_target_is_not_repaired_and_once_resumed_the_repair_is_read_back(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        deliver(stack, "calm", 5)
        paused = stack.bridge.post("/api/targets/travtus/pause", json={})
        assert paused.status_code == 200, paused.text
        for i in (0, 1):
            stack.post(crm.upsert("calm", f"calm-{i}", 2, status="hidden"))
        stack.wait(lambda: all(stack.rentix_listings()[f"calm-{i}"]["formData"].get(
                                   "announcementStatus")
                               == "hidden" for i in (0, 1)), what="hidden on Rentix")
        stack.stop_workers()
        stale = {"calm-0": "stale", "calm-1": "stale"}

        applied, report = reconcile(stack, "--apply", "--target", "travtus")
        assert_not_repaired(report, stale, "the target is paused")
        assert "2 not repaired: 0 missing, 0 drift, 2 stale" in applied.stdout
        _, rerun = reconcile(stack, "--target", "travtus")
        assert totals(rerun) == report["remaining"]

        resumed = stack.bridge.post("/api/targets/travtus/resume", json={})
        assert resumed.status_code == 200, resumed.text
        _, report = reconcile(stack, "--apply", "--target", "travtus")
        for ref, (kind, outcome, why) in outcomes(report).items():
            assert (kind, outcome) == ("stale", "repaired") and "read back" in why, ref
        assert report["repaired"]["stale"] == 2
        assert report["remaining"] == dict.fromkeys(KINDS, 0)
        assert set(stack.travtus_listings("calm")) == {"calm-2", "calm-3", "calm-4"}
        _, rerun = reconcile(stack, "--target", "travtus")
        assert rerun["findings"] == []
