"""The long-running processes: ``bridge serve``, ``bridge worker`` and ``bridge sandbox``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from bridge import logs
from bridge.cli.options import (
    config_file,
    config_option,
    host_port,
    load,
    log_format_option,
    plain_errors,
)
from bridge.logs import LOG_FORMAT_ENV
from bridge.settings import Settings


def register(main: click.Group) -> None:
    for command in (serve, worker, sandbox):
        main.add_command(command)


@click.command()
@config_option
@host_port(8000)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Web processes sharing the port (one per core is a good start).")
@log_format_option
@plain_errors
def serve(config_path: str | None, host: str, port: int, workers: int, log_format: str) -> None:
    """The web process: webhook, dashboard, API, metrics."""
    import os

    import uvicorn

    from bridge.app import LISTEN_HOST_ENV, create_app, quiet_garbage_collector

    uvicorn_logs = use_log_format(log_format)

    config_path = config_file(config_path)
    settings = load(config_path)
    if not settings.redis_url:
        raise click.ClickException("redis_url is required for `bridge serve`")
    asyncio.run(_check_at_start(settings))  # an absent Redis: the app says so and waits
    common: dict[str, Any] = {"host": host, "port": port, "loop": "uvloop",
                              "http": "httptools", "log_level": "warning", "access_log": False,
                              **uvicorn_logs}
    from bridge import tenancy

    tenancy.require_explicit()  # every request names its tenant (path, token, ?tenant=)
    if workers == 1:
        app = create_app(settings, listen_host=host, config_path=str(Path(config_path).resolve()))
        quiet_garbage_collector()
        uvicorn.run(app, **common)
        return
    # Each process builds its own app (and Redis connections) from the same file.
    os.environ["BRIDGE_CONFIG"] = str(Path(config_path).resolve())
    os.environ[LISTEN_HOST_ENV] = host
    os.environ[LOG_FORMAT_ENV] = log_format
    uvicorn.run("bridge.app:app_from_environment", factory=True, workers=workers, **common)


async def _check_at_start(settings: Settings) -> None:
    """The start-up check, before anything listens: raises UnsafeRedis (one plain line, exit
    non-zero) for a Redis that cannot keep what a 202 promises or that refuses the bridge
    (credentials, TLS); a Redis that is only away is the process's own to wait for."""
    from redis.exceptions import RedisError

    from bridge.connections import (
        RedisCheck,
        UnsafeRedis,
        check_state,
        redis_client,
        state_client,
    )

    assert settings.redis_url
    if settings.redis.cluster:  # every master, each through a client of its own
        cluster = state_client(settings.redis_url, cluster=True)
        try:
            await check_state(cluster, settings)
        except UnsafeRedis:
            raise
        except (RedisError, OSError):
            pass  # the cluster away or failing over: the process waits for it
        finally:
            await cluster.aclose()
        return
    redis = redis_client(settings.redis_url)
    try:
        check = RedisCheck(redis, settings.redis)
        await check.at_start()
    finally:
        await redis.aclose()


@click.command()
@config_option
@log_format_option
@plain_errors
def worker(config_path: str | None, log_format: str) -> None:
    """One arq worker process; run several for more throughput."""
    from bridge.connections import UnsafeRedis, refusal, url_address
    from workers.worker import run_worker

    use_log_format(log_format)

    config_path = config_file(config_path)
    settings = load(config_path)
    if not settings.redis_url:
        raise click.ClickException("redis_url is required for `bridge worker`")
    asyncio.run(_check_at_start(settings))  # an absent Redis: the supervisor says so and waits
    try:
        run_worker(settings, str(Path(config_path).resolve()))  # SIGHUP reloads it
    except UnsafeRedis:
        raise
    except Exception as exc:  # credentials or TLS refused once Redis came back: no traceback
        refused = refusal(exc, url_address(settings.redis_url))
        if refused is None:
            raise
        raise refused from None


@click.command()
@config_option
@host_port(8001)
@click.option("--rentix-api-key", default="sandbox", show_default=True,
              help="The API key the sandbox's Rentix accepts.")
@click.option("--travtus-client-id", default="sandbox", show_default=True,
              help="The client ID the sandbox's Travtus accepts.")
@click.option("--travtus-client-secret", default="sandbox", show_default=True,
              help="The client secret the sandbox's Travtus accepts.")
@click.option("--token-ttl", type=int, default=3600, show_default=True,
              help="Travtus token lifetime, seconds.")
@click.option("--rentix-per-minute", type=int, default=300, show_default=True,
              help="Rentix rate limit (the documented 300/min by default).")
@log_format_option
def sandbox(config_path: str | None, host: str, port: int, rentix_api_key: str,
            travtus_client_id: str, travtus_client_secret: str, token_ttl: int,
            rentix_per_minute: int, log_format: str) -> None:
    """The sandbox portals alone (Rentix under /rentix/api/v1, Travtus under /travtus)."""
    import uvicorn

    from bridge.sandbox import SandboxSettings, create_app

    settings = SandboxSettings(
        rentix_api_key=rentix_api_key, travtus_client_id=travtus_client_id,
        travtus_client_secret=travtus_client_secret, token_ttl=token_ttl,
        rentix_per_minute=rentix_per_minute,
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning",
                access_log=False, **use_log_format(log_format))


def use_log_format(log_format: str) -> dict[str, Any]:
    """Log in ``log_format`` from here on; the options that make uvicorn's lines follow it
    (JSON: uvicorn configures no handlers of its own, its loggers reach the root's)."""
    if log_format == "text":
        return {}  # as configured by ``main``; uvicorn keeps its own text lines
    logs.configure(log_format)
    return {"log_config": None}
