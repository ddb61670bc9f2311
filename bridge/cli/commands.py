"""The ``bridge`` command line (contract section 5)."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from bridge.settings import ConfigError, Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), envvar="BRIDGE_CONFIG",
    help="The TOML configuration file (or $BRIDGE_CONFIG).",
)


def host_port(default_port: int) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        func = click.option("--port", type=int, default=default_port, show_default=True)(func)
        return click.option("--host", default="127.0.0.1", show_default=True)(func)  # type: ignore[return-value]

    return decorate


def load(config_path: str | None) -> Settings:
    try:
        return load_settings(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def plain_errors(func: F) -> F:
    """Turn the errors an operator can fix into one line instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from bridge.connections import UnsafeRedis

        try:
            return func(*args, **kwargs)
        except (UnsafeRedis, ConfigError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(verbose: bool) -> None:
    """listing-bridge: keeps property portals in step with the agency's CRM."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@config_option
@host_port(8000)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Web processes sharing the port (one per core is a good start).")
@plain_errors
def serve(config_path: str | None, host: str, port: int, workers: int) -> None:
    """The web process: webhook, dashboard, API, metrics."""
    import os

    import uvicorn

    from bridge.app import LISTEN_HOST_ENV, create_app, quiet_garbage_collector
    from bridge.connections import check_redis, redis_client

    settings = load(config_path)
    if not settings.redis_url:
        raise click.ClickException("redis_url is required for `bridge serve`")
    asyncio.run(_check_redis_once(settings.redis_url, check_redis, redis_client))
    common: dict[str, Any] = {"host": host, "port": port, "loop": "uvloop",
                              "http": "httptools", "log_level": "warning", "access_log": False}
    if workers == 1:
        app = create_app(settings, listen_host=host)
        quiet_garbage_collector()
        uvicorn.run(app, **common)
        return
    # Each process builds its own app (and Redis connections) from the same file.
    os.environ["BRIDGE_CONFIG"] = str(Path(config_path or os.environ["BRIDGE_CONFIG"]).resolve())
    os.environ[LISTEN_HOST_ENV] = host
    uvicorn.run("bridge.app:app_from_environment", factory=True, workers=workers, **common)


async def _check_redis_once(url: str, check: Any, client: Any) -> None:
    from redis.exceptions import RedisError

    redis = client(url)
    try:
        await check(redis)
    except (RedisError, OSError) as exc:
        click.echo(f"warning: Redis at {url} is not reachable yet ({exc}); "
                   "webhooks will answer 503 until it is", err=True)
    finally:
        await redis.aclose()


@main.command()
@config_option
@plain_errors
def worker(config_path: str | None) -> None:
    """One arq worker process; run several for more throughput."""
    from workers.worker import run_worker

    settings = load(config_path)
    if not settings.redis_url:
        raise click.ClickException("redis_url is required for `bridge worker`")
    run_worker(settings)


@main.command()
@config_option
@host_port(8001)
@click.option("--rentix-api-key", default="sandbox", show_default=True)
@click.option("--travtus-client-id", default="sandbox", show_default=True)
@click.option("--travtus-client-secret", default="sandbox", show_default=True)
@click.option("--token-ttl", type=int, default=3600, show_default=True,
              help="Travtus token lifetime, seconds.")
@click.option("--rentix-per-minute", type=int, default=300, show_default=True,
              help="Rentix rate limit (the documented 300/min by default).")
def sandbox(config_path: str | None, host: str, port: int, rentix_api_key: str,
            travtus_client_id: str, travtus_client_secret: str, token_ttl: int,
            rentix_per_minute: int) -> None:
    """The sandbox portals alone (Rentix under /rentix/api/v1, Travtus under /travtus)."""
    import uvicorn

    from bridge.sandbox.app import SandboxSettings, create_app

    settings = SandboxSettings(
        rentix_api_key=rentix_api_key, travtus_client_id=travtus_client_id,
        travtus_client_secret=travtus_client_secret, token_ttl=token_ttl,
        rentix_per_minute=rentix_per_minute,
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning",
                access_log=False)


@main.command()
@config_option
@host_port(8000)
@click.option("--sandbox-port", type=int, default=8001, show_default=True)
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the embedded Redis keeps its data (default: the user's state dir).")
@plain_errors
def dev(config_path: str | None, host: str, port: int, sandbox_port: int,
        state_dir: Path | None) -> None:
    """Everything on one machine: embedded Redis, web, worker and the sandbox portals."""
    from bridge.dev.stack import run_dev

    sys.exit(run_dev(config_path, host, port, sandbox_port, state_dir))


@main.command()
@config_option
@click.option("--url", default="http://127.0.0.1:8000/webhooks/crm", show_default=True,
              help="The bridge's webhook URL.")
@click.option("--secret", help="A whsec_ secret (default: the first one in --config, or the "
              "one `bridge dev` printed).")
@click.option("--file", "file_", type=click.File("rb"), help="Events as JSON lines ('-': stdin).")
@click.option("--generate", type=int, help="Generate this many realistic events instead.")
@click.option("--groups", type=int, default=5, show_default=True)
@click.option("--listings-per-group", type=int, default=20, show_default=True)
@click.option("--rate", type=float, help="Events per second (default: as fast as it can).")
@click.option("--concurrency", type=int, default=16, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
def send(config_path: str | None, url: str, secret: str | None, file_: Any,
         generate: int | None, groups: int, listings_per_group: int, rate: float | None,
         concurrency: int, seed: int) -> None:
    """Sign and post events to a bridge: a file of JSON lines, or generated ones."""
    from bridge.dev.generate import event_stream
    from bridge.dev.sender import send_events

    secret = secret or _default_secret(config_path)
    if (file_ is None) == (generate is None):
        raise click.UsageError("give exactly one of --file or --generate")
    if file_ is not None:
        lines = [line.strip() for line in file_ if line.strip()]
        events: list[Any] = list(lines)
    else:
        events = list(event_stream(generate or 0, groups, listings_per_group, seed))
    with click.progressbar(length=len(events), label="sending", file=sys.stderr) as bar:
        report = asyncio.run(send_events(url, secret, events, concurrency=concurrency,
                                         rate=rate, on_sent=lambda: bar.update(1)))
    for line in report.lines():
        click.echo(line)
    if report.errors or any(s >= 400 for s in report.statuses):
        sys.exit(1)


def _default_secret(config_path: str | None) -> str:
    if config_path:
        return load(config_path).webhook.secrets[0]
    from bridge.dev.stack import dev_secret_file

    path = dev_secret_file()
    if path.exists():
        return path.read_text().strip()
    raise click.UsageError("no secret: pass --secret, --config, or run `bridge dev` first")


def run_service(config_path: str | None, service: Callable[[Any, Settings], Any],
                action: Callable[[Any], Any], errors: type[Exception]) -> Any:
    """Build ``service(redis, settings)``, run one async action with it, close Redis; the
    errors an operator can act on become one plain line instead of a traceback."""
    from bridge.connections import redis_client

    settings = load(config_path)
    if not settings.redis_url:
        raise click.ClickException("redis_url is required")

    async def go() -> Any:
        redis = redis_client(settings.redis_url)  # type: ignore[arg-type]
        try:
            return await action(service(redis, settings))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(go())
    except errors as exc:
        raise click.ClickException(str(exc)) from None


def run_operation(config_path: str | None, action: Callable[[Any], Any]) -> Any:
    from bridge.ops.operations import OperationError, Operations

    return run_service(config_path, Operations, action, OperationError)


@main.command()
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


@main.group()
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


@main.group()
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


@main.group()
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


from bridge.cli.link import link  # noqa: E402  (registered last: it is a separate module)

main.add_command(link)

