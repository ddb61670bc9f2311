"""``bridge dev`` (everything on one machine) and ``bridge send`` (sign and post events)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from bridge import tenancy
from bridge.cli.options import (
    config_option,
    host_port,
    load_tenant,
    log_format_option,
    plain_errors,
)


def register(main: click.Group) -> None:
    for command in (dev, send):
        main.add_command(command)


@click.command()
@config_option
@host_port(8000)
@click.option("--sandbox-port", type=int, default=8001, show_default=True,
              help="The sandbox portals' port.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the embedded Redis keeps its data (default: the user's state dir).")
@log_format_option
@plain_errors
def dev(config_path: str | None, host: str, port: int, sandbox_port: int,
        state_dir: Path | None, log_format: str) -> None:
    """Everything on one machine: embedded Redis, web, worker and the sandbox portals."""
    from bridge import logs
    from bridge.dev.stack import run_dev

    if log_format != "text":
        logs.configure(log_format)
    sys.exit(run_dev(config_path, host, port, sandbox_port, state_dir, log_format))


@click.command()
@config_option
@click.option("--tenant", metavar="NAME", default=None,
              help="The tenant whose webhook receives the events: URL/NAME, signed with its "
                   "first secret in --config (default: `default`, at URL itself).")
@click.option("--url", default="http://127.0.0.1:8000/webhooks/crm", show_default=True,
              help="The bridge's webhook URL (the tenant `default`'s).")
@click.option("--secret", help="A whsec_ secret (default: the tenant's first one in --config, "
              "or the one `bridge dev` printed).")
@click.option("--file", "file_", type=click.File("rb"), help="Events as JSON lines ('-': stdin).")
@click.option("--generate", type=int, help="Generate this many realistic events instead.")
@click.option("--groups", type=int, default=5, show_default=True,
              help="With --generate: how many groups the events spread over.")
@click.option("--listings-per-group", type=int, default=20, show_default=True,
              help="With --generate: how many listings each group holds.")
@click.option("--rate", type=float, help="Events per second (default: as fast as it can).")
@click.option("--concurrency", type=int, default=16, show_default=True,
              help="Requests in flight at once.")
@click.option("--seed", type=int,
              help="With --generate: the same seed generates the same events (default: a new "
                   "one each run, named in the summary).")
def send(config_path: str | None, tenant: str | None, url: str, secret: str | None, file_: Any,
         generate: int | None, groups: int, listings_per_group: int, rate: float | None,
         concurrency: int, seed: int | None) -> None:
    """Sign and post events to a bridge: a file of JSON lines, or generated ones."""
    from bridge.dev.sender import secret_problem, send_events

    url = tenant_url(url, tenant)
    secret = _tenant_secret(config_path, tenant, secret)
    problem = secret_problem(secret)
    if problem:
        raise click.BadParameter(problem, param_hint="--secret")
    if (file_ is None) == (generate is None):
        raise click.UsageError("give exactly one of --file or --generate")
    if file_ is not None:
        lines = [line.strip() for line in file_ if line.strip()]
        events: list[Any] = list(lines)
    else:
        events = _generated(generate or 0, groups, listings_per_group, seed)
    with click.progressbar(length=len(events), label="sending", file=sys.stderr) as bar:
        report = asyncio.run(send_events(url, secret, events, concurrency=concurrency,
                                         rate=rate, on_sent=lambda: bar.update(1)))
    for line in report.lines():
        click.echo(line)
    if report.errors or any(s >= 400 for s in report.statuses):
        sys.exit(1)


def _generated(count: int, groups: int, per_group: int, seed: int | None) -> list[Any]:
    """Versions from the clock (microseconds, well inside the 2^53 a version may reach): a
    second run is newer than the first, not refused as stale, whatever its seed."""
    import secrets
    import time

    from bridge.dev.generate import event_stream

    seed = secrets.randbelow(1_000_000) if seed is None else seed
    first = time.time_ns() // 1000
    click.echo(f"generating {count} events with --seed {seed}, versions from {first} (the "
               "clock: newer than any earlier run's)")
    return list(event_stream(count, groups, per_group, seed, first))


def tenant_url(url: str, tenant: str | None) -> str:
    """Where ``tenant``'s events go: its own webhook, ``/webhooks/crm/NAME`` beside
    ``/webhooks/crm`` (the tenant ``default``'s, as before tenants)."""
    if tenant is None or tenant == tenancy.DEFAULT:
        return url
    if not tenancy.valid(tenant):
        raise click.BadParameter(f"{tenant!r} is not a tenant name ([a-z0-9-])",
                                 param_hint="'--tenant'")
    base = url.rstrip("/")
    return base if base.endswith(f"/webhooks/crm/{tenant}") else f"{base}/{tenant}"


def _tenant_secret(config_path: str | None, tenant: str | None, secret: str | None) -> str:
    """--secret, else the tenant's first secret in the configuration; a configuration given is
    checked to name the tenant even when --secret is (nothing is sent to an unknown one)."""
    if config_path or (tenant not in (None, tenancy.DEFAULT) and not secret):
        secrets = load_tenant(config_path, tenant).webhook.secrets
        if not secret and not secrets:
            raise click.UsageError(f"tenant {tenant!r} has no webhook secret: pass --secret")
        return secret or secrets[0]
    return secret or _dev_secret()


def _dev_secret() -> str:
    from bridge.dev.stack import dev_secret_file

    path = dev_secret_file()
    if path.exists():
        return path.read_text().strip()
    raise click.UsageError("no secret: pass --secret, --config, or run `bridge dev` first")
