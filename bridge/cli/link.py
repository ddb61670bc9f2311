"""``bridge link``: link and unlink external IDs on Rentix, the matching scan, and adoption."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

from bridge.cli.options import config_option, run_service, tenant_option
from bridge.linking.matching import DEFAULT_MIN_CONFIDENCE

target_option = click.option(
    "--target", default=None,
    help="The Rentix target's name (may be left out when only one is configured).",
)


def run_linking(config_path: str | None, tenant: str | None,
                action: Callable[[Any], Coroutine[Any, Any, Any]]) -> Any:
    """Run one linking action against the configured Redis and ``tenant``'s portal; plain
    errors."""
    from bridge.linking.service import LinkError, Linking

    return run_service(config_path, Linking, action, LinkError, tenant)


@click.group()
def link() -> None:
    """Link hand-made Rentix listings to their CRM records by external ID."""


@link.command("add")
@config_option
@tenant_option
@target_option
@click.argument("portal_id", type=int)
@click.argument("external_ref")
def link_add(config_path: str | None, tenant: str | None, target: str | None, portal_id: int,
             external_ref: str) -> None:
    """Link Rentix listing PORTAL_ID to the CRM listing EXTERNAL_REF."""
    result = run_linking(config_path, tenant, lambda lk: lk.link(target, portal_id, external_ref))
    click.echo(result.message)


@link.command("remove")
@config_option
@tenant_option
@target_option
@click.argument("portal_id", type=int)
def link_remove(config_path: str | None, tenant: str | None, target: str | None,
                portal_id: int) -> None:
    """Remove the external ID of Rentix listing PORTAL_ID (the listing itself stays)."""
    result = run_linking(config_path, tenant, lambda lk: lk.unlink(target, portal_id))
    click.echo(result.message)


@link.command("scan")
@config_option
@tenant_option
@target_option
@click.option("--apply", is_flag=True, help="Link the confident matches (default: report only).")
@click.option("--min-confidence", type=click.FloatRange(0, 1, min_open=True),
              default=DEFAULT_MIN_CONFIDENCE, show_default=True,
              help="The score a match needs to be linked.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="Where to write the CSV and JSON report.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
def link_scan(config_path: str | None, tenant: str | None, target: str | None, apply: bool,
              min_confidence: float, out_dir: Path, as_json: bool) -> None:
    """Match unlinked Rentix listings to CRM listings; with --apply, link the confident ones."""
    result = run_linking(config_path, tenant, lambda lk: lk.scan(
        target, apply=apply, min_confidence=min_confidence, report_dir=out_dir))
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else result.render())


@link.group("adopt")
def adopt() -> None:
    """Adoption mode: no creates reach the portal until its hand-made listings are linked."""


@adopt.command("status")
@config_option
@tenant_option
@target_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
def adopt_status(config_path: str | None, tenant: str | None, target: str | None,
                 as_json: bool) -> None:
    """Whether the target is adopting, and the creates it holds."""
    status = run_linking(config_path, tenant, lambda lk: lk.adoption_status(target))
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    state = "on" if status["active"] else "off" if not status["configured"] else "ended"
    click.echo(f"{status['target']}: adoption {state}; {status['linked']} ref(s) known linked; "
               f"{len(status['held_creates'])} create(s) held")
    for held in status["held_creates"]:
        click.echo(f"  HELD {held['ref']} (group {held['group']})")


@adopt.command("end")
@config_option
@tenant_option
@target_option
def adopt_end(config_path: str | None, tenant: str | None, target: str | None) -> None:
    """End adoption: the held creates are sent now."""
    result = run_linking(config_path, tenant, lambda lk: lk.end_adoption(target))
    click.echo(result["message"])
