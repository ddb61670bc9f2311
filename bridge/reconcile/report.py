"""A reconciliation's report: a table and totals for the terminal, JSON or CSV for a file.

Every finding carries its outcome (repaired, not repaired, left alone; found in a dry run) and
why; ``remaining`` is what the portals still differ by afterwards, which an immediate rerun
finds."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from bridge.reconcile.compare import KINDS
from bridge.reconcile.service import Report

COLUMNS = ("target", "group", "ref", "kind", "detail", "fields", "outcome", "why")
REPAIRABLE = tuple(kind for kind in KINDS if kind != "unknown")


def as_dict(report: Report, applied: bool) -> dict[str, Any]:
    return {
        "applied": applied,
        "groups": report.groups,
        "totals": report.totals(),
        "repaired": report.repaired_totals() if applied else None,
        "not_repaired": report.status_totals("not repaired") if applied else None,
        "left_alone": report.status_totals("left alone"),
        "remaining": report.remaining_totals(),
        "reads": report.reads,
        "skipped": report.skipped,
        "findings": [{**asdict(f), "outcome": o.status, "why": o.why}
                     for f, o in report.outcomes()],
    }


def write(report: Report, path: Path, applied: bool) -> None:
    """JSON, or CSV when the file name ends in .csv."""
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(COLUMNS)
            for f, o in report.outcomes():
                writer.writerow([f.target, f.group, f.ref, f.kind, f.detail, " ".join(f.fields),
                                 o.status, o.why])
        return
    path.write_bytes(orjson.dumps(as_dict(report, applied), option=orjson.OPT_INDENT_2))


def render(report: Report, applied: bool, max_rows: int = 50) -> list[str]:
    return [*_table(report, applied, max_rows), *_summary(report, applied),
            *(f"skipped {s}" for s in report.skipped)]


def _table(report: Report, applied: bool, max_rows: int) -> list[str]:
    rows = report.outcomes()
    if not rows:
        return []
    lines = [f"{'target':<10} {'group':<20} {'ref':<20} {'kind':<8} "
             + ("outcome      " if applied else "") + "detail"]
    for f, o in rows[:max_rows]:
        outcome = f"{o.status:<12} " if applied else ""
        why = f" ({o.why})" if applied and o.why else ""
        lines.append(f"{f.target:<10} {f.group or '-':<20} {f.ref:<20} {f.kind:<8} "
                     f"{outcome}{f.detail}{why}")
    if len(rows) > max_rows:
        lines.append(f"... and {len(rows) - max_rows} more (--report FILE has them all)")
    return lines


def _summary(report: Report, applied: bool) -> list[str]:
    totals = report.totals()
    lines = [f"{report.groups} group check(s): " + _kinds(totals, KINDS)
             + "; portal reads: "
             + (", ".join(f"{t} {n}" for t, n in report.reads.items()) or "none")]
    if not applied:
        if any(totals[kind] for kind in REPAIRABLE):
            lines.append("nothing changed (dry run): add --apply to repair missing, drift and "
                         "stale")
        return lines
    repaired = report.repaired_totals()
    lines.append("repaired and confirmed by reading the portal back: "
                 + _kinds(repaired, REPAIRABLE))
    lines += _not_repaired(report)
    lines.append(f"left alone: {totals['unknown']} unknown (never touched)")
    lines.append("still differing (what a rerun finds now): "
                 + _kinds(report.remaining_totals(), KINDS))
    return lines


def _not_repaired(report: Report) -> list[str]:
    """How many were not repaired, then how many for each reason."""
    missed = [(f, o) for f, o in report.outcomes() if o.status == "not repaired"]
    if not missed:
        return ["not repaired: none"]
    lines = [f"{len(missed)} not repaired: "
             + _kinds(report.status_totals("not repaired"), REPAIRABLE)]
    reasons = Counter(o.why for _, o in missed)
    lines += [f"  {n}: {why}" for why, n in reasons.most_common()]
    return lines


def _kinds(counts: dict[str, int], kinds: tuple[str, ...]) -> str:
    return ", ".join(f"{counts[kind]} {kind}" for kind in kinds)
