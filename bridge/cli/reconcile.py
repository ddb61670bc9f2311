"""``bridge reconcile``: compare what each portal holds with the CRM's state, and repair; for one
tenant (``--tenant``, default ``default``) or for each configured tenant in turn
(``--all-tenants``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bridge.cli.options import config_option, load, run_redis, tenant_option, tenant_settings
from bridge.reconcile.compare import Kind

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from bridge.reconcile.service import Reconciler, Report
    from bridge.settings import Settings

REPAIRED: tuple[Kind, ...] = ("missing", "drift", "stale")


def register(main: click.Group) -> None:
    main.add_command(reconcile)


@click.command()
@config_option
@tenant_option
@click.option("--all-tenants", is_flag=True,
              help="Every configured tenant in turn, each with its own report (not with "
                   "--tenant or --group).")
@click.option("--target", default=None, help="Only this target (default: every one).")
@click.option("--group", default=None, help="Only this group (default: every group seen).")
@click.option("--apply", is_flag=True,
              help="Repair what is the bridge's own: send missing and drifted listings again, "
                   "take down stale ones (through the guards), and read the portal back: each "
                   "finding says whether it was repaired, and why not. Unknown ones are never "
                   "touched.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="Write every finding and its outcome to this file: JSON, or CSV for *.csv "
                   "(with --all-tenants, one file per tenant: NAME before the suffix).")
def reconcile(config_path: str | None, tenant: str | None, all_tenants: bool,
              target: str | None, group: str | None, apply: bool,
              report_path: Path | None) -> None:
    """Compare each portal with the CRM's state: missing, drift, stale, unknown. Each run's
    checks are recorded for the dashboard, as the periodic pass's are."""
    settings = load(config_path)
    if not all_tenants:
        reconcile_tenant(tenant_settings(settings, tenant), target, group, apply, report_path)
        return
    if tenant is not None or group is not None:
        raise click.UsageError("--all-tenants runs every tenant: --tenant and --group name "
                               "one tenant's (use --tenant NAME instead)")
    for name in settings.tenant_names():
        view = settings.for_tenant(name)
        click.echo(f"tenant {name}:")
        if target is not None and target not in [t.name for t in view.targets]:
            click.echo(f"  no target named {target!r}: skipped")
            continue
        path = None if report_path is None else tenant_path(report_path, name)
        reconcile_tenant(view, target, None, apply, path)


def tenant_path(path: Path, tenant: str) -> Path:
    """``report.json`` -> ``report.north.json``: one file per tenant, side by side."""
    return path.with_name(f"{path.stem}.{tenant}{path.suffix}")


def reconcile_tenant(settings: Settings, target: str | None, group: str | None, apply: bool,
                     report_path: Path | None) -> None:
    """One tenant's run, under its keys (``settings`` is the tenant's view), and its report."""
    from bridge.reconcile import report as reports

    if target is not None and target not in [t.name for t in settings.targets]:
        names = ", ".join(t.name for t in settings.targets)
        raise click.ClickException(f"no target named {target!r}; configured: {names}")
    report = run_redis(settings, lambda redis: _run(redis, settings, target, group, apply),
                       settings.tenant)
    for line in reports.render(report, apply):
        click.echo(line)
    if report_path is not None:
        reports.write(report, report_path, apply)
        click.echo(f"report: {report_path}")


async def _run(redis: Redis, settings: Settings, target: str | None, group: str | None,
               apply: bool) -> Report:
    from bridge.portals import adapters_for
    from bridge.reconcile.service import Reconciler

    adapters = adapters_for(settings)
    try:
        reconciler = Reconciler(redis, settings, adapters)
        groups = await known_groups(reconciler, group)
        steps = len(groups) * len(reconciler.targets(target))
        with click.progressbar(length=steps, label="reconciling", file=sys.stderr) as bar:
            return await reconciler.run(target, group, REPAIRED if apply else (),
                                        progress=lambda _t, _g: bar.update(1))
    finally:
        for adapter in adapters.values():
            await adapter.aclose()


async def known_groups(reconciler: Reconciler, group: str | None) -> list[str]:
    """Every group seen, or the one named: a name the bridge never saw is a typo, not a group
    to report as all "unknown" listings."""
    seen = await reconciler.groups()
    if group is None:
        return list(seen)
    if group not in seen:
        raise click.ClickException(f"unknown group {group!r}: the bridge has received no event "
                                   "for it (`bridge status` counts the groups known)")
    return [group]

