"""``bridge inbox dead list|retry|discard``: the webhook events the workers could not fold,
set aside in ``lb:inbox:dead`` (``bridge/ingest/inbox.py``); the same as the dashboard's
Events set aside page and ``/api/inbox/dead``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from bridge.cli.operate import run_operation
from bridge.cli.options import config_option, tenant_option

if TYPE_CHECKING:
    from bridge.ingest.inbox import DeadEvent


def register(main: click.Group) -> None:
    main.add_command(inbox)


@click.group()
def inbox() -> None:
    """The inbox of webhook events the workers fold into the state."""


@inbox.group()
def dead() -> None:
    """Events the workers could not fold, set aside for an operator."""


@dead.command("list")
@config_option
@tenant_option
@click.option("--json", "as_json", is_flag=True,
              help="Print them as JSON (the same as GET /api/inbox/dead).")
def list_dead(config_path: str | None, tenant: str | None, as_json: bool) -> None:
    """Every event set aside, the first set aside first, with the error that stopped it."""
    import orjson

    events = run_operation(config_path, tenant, lambda ops: ops.dead_events())
    if as_json:
        click.echo(orjson.dumps({"dead": events}, option=orjson.OPT_INDENT_2).decode())
    elif not events:
        click.echo("no event is set aside")
    else:
        click.echo("\n".join(line for e in events for line in render_dead(e)))


def render_dead(event: DeadEvent) -> list[str]:
    refs = ", ".join(event.refs[:10]) + (f" and {len(event.refs) - 10} more"
                                         if len(event.refs) > 10 else "")
    what = f"{event.kind or 'unreadable'}{' (redelivery)' if event.redelivery else ''}"
    return [f"{event.id}: {what} group {event.group or '?'} listings {refs or '-'}; set aside "
            f"{_ago(event.at)} ago, {event.attempts} time(s)",
            f"  error: {event.error}"]


def _ago(at: int) -> str:
    from bridge.clock import now_ms

    return f"{max(now_ms() - at, 0) / 1000:.0f} s"


def _ids(ids: tuple[str, ...], every: bool) -> list[str] | None:
    if every == bool(ids):
        raise click.UsageError("name the events by id (bridge inbox dead list), or pass --all")
    return None if every else list(ids)


@dead.command()
@config_option
@tenant_option
@click.option("--all", "every", is_flag=True, help="Every event set aside.")
@click.argument("ids", nargs=-1)
def retry(config_path: str | None, tenant: str | None, every: bool, ids: tuple[str, ...]) -> None:
    """Put events set aside back at the head of the inbox (fix what stopped them first)."""
    chosen = _ids(ids, every)
    moved = run_operation(config_path, tenant, lambda ops: ops.retry_dead(chosen))
    click.echo(f"retried {len(moved)} event(s): {', '.join(e.id for e in moved) or 'none'}")


@dead.command()
@config_option
@tenant_option
@click.option("--all", "every", is_flag=True, help="Every event set aside.")
@click.argument("ids", nargs=-1)
def discard(config_path: str | None, tenant: str | None, every: bool, ids: tuple[str, ...]) -> None:
    """Drop events set aside for good: they are never folded."""
    chosen = _ids(ids, every)
    dropped = run_operation(config_path, tenant, lambda ops: ops.discard_dead(chosen))
    click.echo(f"discarded {len(dropped)} event(s): "
               f"{', '.join(e.id for e in dropped) or 'none'}")
