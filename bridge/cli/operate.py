"""What an operator does from the terminal: ``bridge status``, ``held``, ``quarantine`` and
``target``; every action goes through ``bridge.ops``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from bridge.cli.options import config_option, run_service


def register(main: click.Group) -> None:
    for command in (status, held, quarantine, target):
        main.add_command(command)


def run_operation(config_path: str | None, action: Callable[[Any], Any]) -> Any:
    from bridge.ops.operations import OperationError, Operations

    return run_service(config_path, Operations, action, OperationError)


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
def status(config_path: str | None, as_json: bool) -> None:
    """Queues, held syncs and quarantine, in the terminal."""
    import json

    from bridge.ops.operations import render_status

    result = run_operation(config_path, lambda ops: ops.status())
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo("\n".join(render_status(result)))


@click.group()
def held() -> None:
    """Syncs held by a guard: see what they would delete, then release or discard them."""


@held.command("release")
@config_option
@click.option("--target", required=True)
@click.argument("group")
def held_release(config_path: str | None, target: str, group: str) -> None:
    """Send the held sync of GROUP, deletions included."""
    entry = run_operation(config_path, lambda ops: ops.release(target, group))
    click.echo(f"released {group} on {target}; it will delete: "
               f"{', '.join(entry['deletions']) or 'nothing'}")


@held.command("discard")
@config_option
@click.option("--target", required=True)
@click.argument("group")
def held_discard(config_path: str | None, target: str, group: str) -> None:
    """Never send the held sync of GROUP (a later change is judged afresh)."""
    run_operation(config_path, lambda ops: ops.discard(target, group))
    click.echo(f"discarded the held sync of {group} on {target}")


@click.group()
def quarantine() -> None:
    """Listings a portal refused: retry them or discard them."""


@quarantine.command("retry")
@config_option
@click.option("--target", required=True)
@click.argument("refs", nargs=-1, required=True)
def quarantine_retry(config_path: str | None, target: str, refs: tuple[str, ...]) -> None:
    count = run_operation(config_path, lambda ops: ops.retry(target, list(refs)))
    click.echo(f"{count} listing(s) will be sent to {target} again")


@quarantine.command("discard")
@config_option
@click.option("--target", required=True)
@click.argument("refs", nargs=-1, required=True)
def quarantine_discard(config_path: str | None, target: str, refs: tuple[str, ...]) -> None:
    count = run_operation(config_path, lambda ops: ops.discard_quarantined(target, list(refs)))
    click.echo(f"{count} listing(s) discarded for {target} (until their content changes)")


@click.group()
def target() -> None:
    """Pause or resume delivery to a target."""


@target.command("pause")
@config_option
@click.argument("name")
def target_pause(config_path: str | None, name: str) -> None:
    run_operation(config_path, lambda ops: ops.pause(name))
    click.echo(f"{name} paused; changes keep accumulating")


@target.command("resume")
@config_option
@click.argument("name")
def target_resume(config_path: str | None, name: str) -> None:
    run_operation(config_path, lambda ops: ops.resume(name))
    click.echo(f"{name} resumed; waiting changes flow now")
