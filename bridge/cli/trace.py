"""``bridge trace REF``: why a listing is as it is on each portal. Where it stands on each
target (the content a flush would send now against what the target last accepted), then its
story, newest first: events received, flush decisions per target, portal calls
(``bridge/ops/trace.py``)."""

from __future__ import annotations

import click

from bridge.cli.operate import run_operation
from bridge.cli.options import config_option, tenant_option


def register(main: click.Group) -> None:
    main.add_command(trace)


@click.command()
@config_option
@tenant_option
@click.option("--json", "as_json", is_flag=True,
              help="Print the story as JSON (the same as GET /api/listings/{ref}/trace).")
@click.argument("ref")
def trace(config_path: str | None, tenant: str | None, as_json: bool, ref: str) -> None:
    """One listing's story: where it stands on each portal, then every event received, flush
    decision per target and portal call, newest first."""
    import orjson

    from bridge.ops.trace import render_trace

    result = run_operation(config_path, tenant, lambda ops: ops.trace(ref))
    if as_json:
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo("\n".join(render_trace(result)))
