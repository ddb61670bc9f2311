"""What every command shares: the --config option, --host/--port, loading settings, plain
errors, and running one async action against Redis."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import click

from bridge.logs import LOG_FORMAT_ENV, LOG_FORMATS, be_verbose
from bridge.settings import CONFIG_ENV, ConfigError, Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), envvar="BRIDGE_CONFIG",
    help="The TOML configuration file (or $BRIDGE_CONFIG).",
)

log_format_option = click.option(
    "--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
    envvar=LOG_FORMAT_ENV,
    help="Lines of text, or one JSON object per line (time, level, logger, message, and group, "
         f"target, listing where known) for a log collector (or ${LOG_FORMAT_ENV}).",
)


def _verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        be_verbose()


def verbose_option(func: F) -> F:
    """``-v`` after a command as well as before it (``bridge send -v``, ``bridge -v send``)."""
    return click.option("-v", "--verbose", is_flag=True, expose_value=False,
                        callback=_verbose, help="Log more (as `bridge -v`).")(func)


def host_port(default_port: int) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        func = click.option("--port", type=int, default=default_port, show_default=True,
                            help="The port to listen on.")(func)
        return click.option("--host", default="127.0.0.1", show_default=True,
                            help="The address to listen on (0.0.0.0: every interface).")(func)

    return decorate


def config_file(config_path: str | None) -> str:
    """The file named by --config or $BRIDGE_CONFIG (click reads both), else the one
    ``bridge dev`` wrote, named on stderr so that nobody acts on a stack by surprise."""
    if config_path:
        return config_path
    from bridge.dev.stack import dev_config_file

    written = dev_config_file()
    if not written.is_file():
        raise click.ClickException(
            f"no configuration: pass --config FILE or set {CONFIG_ENV} (or start `bridge dev`: "
            "commands use the configuration it writes when none is given)")
    click.echo(f"using {written}, the configuration `bridge dev` wrote (--config FILE or "
               f"{CONFIG_ENV} names another)", err=True)
    return str(written)


def load(config_path: str | None) -> Settings:
    try:
        return load_settings(config_file(config_path))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def plain_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors an operator can fix into one line instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from bridge.connections import UnsafeRedis

        try:
            return func(*args, **kwargs)
        except (UnsafeRedis, ConfigError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def run_service(config_path: str | None, service: Callable[[Any, Settings], Any],
                action: Callable[[Any], Any], errors: type[Exception]) -> Any:
    """Build ``service(redis, settings)``, run one async action with it, close Redis; the
    errors an operator can act on become one plain line instead of a traceback. The client is
    redis-py's from ``redis_url`` with every option of the URL, as the other processes make."""
    from bridge.connections import redis_client

    settings = load(config_path)
    url = settings.redis_url
    if not url:
        raise click.ClickException("redis_url is required")

    async def go() -> Any:
        redis = redis_client(url)
        try:
            return await action(service(redis, settings))
        finally:
            await redis.aclose()

    try:
        with redis_trouble_in_one_line(url):
            return asyncio.run(go())
    except errors as exc:
        raise click.ClickException(str(exc)) from None


@contextlib.contextmanager
def redis_trouble_in_one_line(url: str) -> Iterator[None]:
    """Credentials or TLS refused, or no Redis (down, or not answering): one line naming it,
    instead of a traceback; anything else goes on as it is."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from bridge.connections import plain, refusal, url_address

    try:
        yield
    except Exception as exc:
        refused = refusal(exc, url_address(url))
        if refused is not None:
            raise click.ClickException(str(refused)) from None
        if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
            raise click.ClickException(f"Redis at {url_address(url)} does not answer "
                                       f"({plain(exc)}); is it (or `bridge dev`) running?") \
                from None
        raise
