"""A reconciliation's report: a table and totals for the terminal, JSON or CSV for a file."""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from bridge.reconcile.compare import KINDS
from bridge.reconcile.service import Report

COLUMNS = ("target", "group", "ref", "kind", "detail", "fields")


def as_dict(report: Report, applied: bool) -> dict[str, Any]:
    return {
        "applied": applied,
        "groups": report.groups,
        "totals": report.totals(),
        "repaired": report.repaired_totals() if applied else None,
        "reads": report.reads,
        "skipped": report.skipped,
        "findings": [asdict(f) for f in report.findings],
    }


def write(report: Report, path: Path, applied: bool) -> None:
    """JSON, or CSV when the file name ends in .csv."""
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(COLUMNS)
            for f in report.findings:
                writer.writerow([f.target, f.group, f.ref, f.kind, f.detail, " ".join(f.fields)])
        return
    path.write_bytes(orjson.dumps(as_dict(report, applied), option=orjson.OPT_INDENT_2))


def render(report: Report, applied: bool, max_rows: int = 50) -> list[str]:
    lines = []
    if report.findings:
        lines.append(f"{'target':<10} {'group':<20} {'ref':<20} {'kind':<8} detail")
        for f in report.findings[:max_rows]:
            lines.append(f"{f.target:<10} {f.group or '-':<20} {f.ref:<20} {f.kind:<8} "
                         f"{f.detail}")
        if len(report.findings) > max_rows:
            lines.append(f"... and {len(report.findings) - max_rows} more (--report FILE "
                         "has them all)")
    totals = report.totals()
    lines.append(f"{report.groups} group check(s): "
                 + ", ".join(f"{totals[kind]} {kind}" for kind in KINDS)
                 + "; portal reads: "
                 + (", ".join(f"{t} {n}" for t, n in report.reads.items()) or "none"))
    if applied:
        repaired = report.repaired_totals()
        lines.append("repaired: " + ", ".join(f"{repaired[kind]} {kind}" for kind in KINDS
                                              if kind != "unknown")
                     + "; unknown listings are never touched")
    elif any(totals[kind] for kind in KINDS if kind != "unknown"):
        lines.append("nothing changed (dry run): add --apply to repair missing, drift and stale")
    lines += [f"skipped {s}" for s in report.skipped]
    return lines
