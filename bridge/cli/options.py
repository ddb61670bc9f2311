"""What every command shares: the --config and --tenant options, --host/--port, loading settings
(a tenant's view of them), plain errors, and running one async action against Redis."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import click

from bridge import tenancy
from bridge.logs import LOG_FORMAT_ENV, LOG_FORMATS, be_verbose
from bridge.settings import CONFIG_ENV, ConfigError, Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), envvar="BRIDGE_CONFIG",
    help="The TOML configuration file (or $BRIDGE_CONFIG).",
)

# Default None, not "default": a command can tell an explicit --tenant from none (reconcile's
# --all-tenants refuses one; an unconfigured "default" is then named as the default).
tenant_option = click.option(
    "--tenant", metavar="NAME", default=None,
    help="The tenant (agency) whose data and portals this works on (default: `default`, the "
         "tenant of the configuration's top level).",
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
        settings = load_settings(config_file(config_path))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    # Rate budgets belong to portal credentials: a command's portal calls (reconcile's reads, a
    # link scan) spend from the buckets the workers spend from, and status reads those.
    tenancy.register_credentials(settings.credentials())
    return settings


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


def tenant_settings(settings: Settings, tenant: str | None) -> Settings:
    """``tenant``'s view of the settings (its targets, secrets, guards); a tenant the file does
    not configure is a usage error (exit 2, before anything is done) naming those it does."""
    name = tenant or tenancy.DEFAULT
    names = settings.tenant_names()
    if name not in names:
        hint = "" if tenant else "; pass --tenant NAME"
        raise click.BadParameter(f"no tenant {name!r} is configured (configured: "
                                 f"{', '.join(names) or 'none'}){hint}", param_hint="'--tenant'")
    return settings.for_tenant(name)


def load_tenant(config_path: str | None, tenant: str | None) -> Settings:
    return tenant_settings(load(config_path), tenant)


def run_service(config_path: str | None, service: Callable[[Any, Settings], Any],
                action: Callable[[Any], Any], errors: type[Exception],
                tenant: str | None = None) -> Any:
    """Build ``service(redis, settings)`` for ``tenant`` (its settings, its keys), run one async
    action with it, close Redis; the errors an operator can act on become one plain line
    instead of a traceback."""
    view = load_tenant(config_path, tenant)
    try:
        return run_redis(view, lambda redis: action(service(redis, view)), view.tenant)
    except errors as exc:
        raise click.ClickException(str(exc)) from None


def run_redis(settings: Settings, action: Callable[[Any], Awaitable[R]],
              tenant: str | None = None) -> R:
    """Run ``action(redis)`` under ``tenant`` (none: the action names its tenants itself) and
    close Redis. The client is redis-py's from ``redis_url`` with every option of the URL, as
    the other processes make."""
    from bridge.connections import state_client

    url = settings.redis_url
    if not url:
        raise click.ClickException("redis_url is required")

    async def go() -> R:
        redis = state_client(url, settings.redis.cluster)
        try:
            with tenancy.use(tenant) if tenant else contextlib.nullcontext():
                return await action(redis)
        finally:
            await redis.aclose()

    with redis_trouble_in_one_line(url):
        return asyncio.run(go())


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
