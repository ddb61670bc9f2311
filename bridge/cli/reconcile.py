"""``bridge reconcile``: compare what each portal holds with the CRM's state, and repair."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bridge.cli.options import config_option, load, redis_trouble_in_one_line
from bridge.reconcile.compare import Kind

if TYPE_CHECKING:
    from bridge.reconcile.service import Reconciler

REPAIRED: tuple[Kind, ...] = ("missing", "drift", "stale")


def register(main: click.Group) -> None:
    main.add_command(reconcile)


@click.command()
@config_option
@click.option("--target", default=None, help="Only this target (default: every one).")
@click.option("--group", default=None, help="Only this group (default: every group seen).")
@click.option("--apply", is_flag=True,
              help="Repair what is the bridge's own: send missing and drifted listings again, "
                   "take down stale ones (through the guards), and read the portal back: each "
                   "finding says whether it was repaired, and why not. Unknown ones are never "
                   "touched.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="Write every finding and its outcome to this file: JSON, or CSV for *.csv.")
def reconcile(config_path: str | None, target: str | None, group: str | None, apply: bool,
              report_path: Path | None) -> None:
    """Compare each portal with the CRM's state: missing, drift, stale, unknown. Each run's
    checks are recorded for the dashboard, as the periodic pass's are."""
    import asyncio

    from bridge.connections import redis_client
    from bridge.portals import adapters_for
    from bridge.reconcile import report as reports
    from bridge.reconcile.service import Reconciler

    settings = load(config_path)
    if not settings.redis_url:
        raise click.ClickException("redis_url is required")
    if target is not None and target not in [t.name for t in settings.targets]:
        names = ", ".join(t.name for t in settings.targets)
        raise click.ClickException(f"no target named {target!r}; configured: {names}")
    url = settings.redis_url

    async def go() -> Any:
        redis = redis_client(url)
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
            await redis.aclose()

    with redis_trouble_in_one_line(url):
        report = asyncio.run(go())
    for line in reports.render(report, apply):
        click.echo(line)
    if report_path is not None:
        reports.write(report, report_path, apply)
        click.echo(f"report: {report_path}")


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
