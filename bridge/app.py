"""The web process: webhook, health probes (and, as they land, dashboard, API, metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import html
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bridge import tenancy
from bridge.connections import RedisCheck, address, node_url, redis_client, state_client
from bridge.dashboard import dashboard_routes, links
from bridge.ingest.cluster_client import ClusterScripts
from bridge.ingest.signatures import Verifier
from bridge.ingest.store import ACCEPT, EventStore
from bridge.ingest.webhook import RETRY_AFTER_S, WebhookEndpoint, tenant_of
from bridge.logs import LOG_FORMAT_ENV, LOG_FORMATS, configure
from bridge.migration import migrate
from bridge.ops.cluster import cluster_nodes
from bridge.responses import JSONResponse, error
from bridge.settings import CONFIG_ENV, Settings, load_settings, reread, seed_urls

log = logging.getLogger("bridge.app")


LISTEN_HOST_ENV = "BRIDGE_LISTEN_HOST"
WEBHOOK_PATH = "/webhooks/crm"
# What a page, an API call or a scrape raises when Redis is away or does not answer in time.
UNAVAILABLE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
LOG_AGAIN_S = 60.0


class BridgeApp(Starlette):
    """The web app: ``POST /webhooks/crm[/{tenant}]`` goes straight to its endpoint, ahead of
    Starlette's middleware and router; every other request takes them. Those layers do nothing
    for the webhook (it answers every error itself; an exception it does not expect still
    becomes a logged 500, from uvicorn) and cost about 8 % of its CPU per request (py-spy under
    ``python -m tests.bench.webhook``)."""

    webhook: WebhookEndpoint | None = None
    config_path: str | None = None  # what a SIGHUP reloads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.webhook is not None and scope["type"] == "http"
                and scope["method"] == "POST" and tenant_of(scope["path"]) is not None
                and not scope.get("root_path")):
            scope["app"] = self
            await self.webhook(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def reload(self) -> bool:
        """Read the configuration file again and serve its tenants from the next request on
        (a request under way finishes with what it started with). An invalid file is logged
        with its name and line and changes nothing. Settings outside the tenants (Redis, the
        listening address, [webhook] limits) take a restart."""
        settings = reread(self.config_path, log)
        if settings is None or self.webhook is None:
            return False
        self.webhook.verifiers = verifiers(settings)
        self.state.settings = settings
        return True


def verifiers(settings: Settings) -> dict[str, Verifier]:
    """Each tenant's webhook verifier: its own secrets, the deployment's tolerance."""
    tolerance = settings.webhook.tolerance_seconds
    return {name: Verifier(settings.for_tenant(name).webhook.secrets, tolerance)
            for name in settings.tenant_names()}


class Unavailable:
    """A dashboard page, API call or /metrics scrape that needs Redis while it is away or does
    not answer (every read has a 5 s deadline, bridge.connections.redis_client): 503 with
    Retry-After, saying so in the page's own terms, instead of a 500 and a traceback. Logged
    at most once a minute per cause (the dashboard polls every few seconds), else at debug
    level."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.cause: str | None = None
        self.said_at = 0.0

    async def answer(self, request: Request, exc: Exception) -> Response:
        cause = f"{type(exc).__name__}: {exc}"
        message = (f"Redis at {self.where} is not reachable or did not answer in time "
                   f"({cause}); this works again once it does")
        if cause != self.cause or time.monotonic() - self.said_at > LOG_AGAIN_S:
            self.cause, self.said_at = cause, time.monotonic()
            log.warning("%s %s answered 503: %s", request.method, request.url.path, message)
        else:
            log.debug("%s %s answered 503: %s", request.method, request.url.path, message)
        headers = {"Retry-After": RETRY_AFTER_S}
        if request.url.path.startswith("/dashboard"):
            return HTMLResponse(f"<!doctype html><title>Redis unavailable</title><h1>Redis "
                                f"unavailable</h1><p>{html.escape(message)}</p>",
                                status_code=503, headers=headers)
        return error(503, "storage_unavailable", message, headers=headers)


def app_from_environment() -> Starlette:
    """For ``bridge serve --workers N``: each process loads $BRIDGE_CONFIG itself (and sets
    up its logging: it starts afresh)."""
    log_format = os.environ.get(LOG_FORMAT_ENV, "text")
    if log_format in LOG_FORMATS:
        configure(log_format)
    tenancy.require_explicit()  # every request names its tenant (path, token, ?tenant=)
    app = create_app(load_settings(), os.environ.get(LISTEN_HOST_ENV, "127.0.0.1"),
                     config_path=os.environ.get(CONFIG_ENV))
    quiet_garbage_collector()
    return app


def quiet_garbage_collector() -> None:
    """Each webhook makes many short-lived objects; with CPython's default thresholds the
    cyclic collector runs so often that it adds tens of ms to the slowest answers (p99 37-42 ms
    against 11 ms measured with tests/bench/webhook.py). Freeze what start-up made and collect
    the young generation less often. Called by ``bridge serve`` for its own process only."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


def create_app(settings: Settings, listen_host: str = "127.0.0.1",
               config_path: str | None = None) -> Starlette:
    """The web app for ``settings``; with ``config_path`` a SIGHUP reloads its tenants."""
    if not settings.redis_url:
        raise ValueError("redis_url is required to serve")
    tenancy.register_credentials(settings.credentials())
    redis = state_client(settings.redis_url, settings.redis.cluster)
    check, store = _storage(settings, redis)
    webhook = WebhookEndpoint(verifiers(settings), store, settings.webhook.max_body_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await check.at_start()  # refuses what waiting does not mend; stops the server
        if check.problem is not None:
            log.warning("%s; webhooks answer 503 until it is reachable and passes the start-up "
                        "check", check.problem)
        elif not settings.redis.cluster:  # away now: the workers migrate when it is back
            await _migrated(redis)
        hangup = _on_hangup(bridge_app)
        yield
        if hangup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await store.aclose()
        if check.redis is not redis:  # a cluster's: the first seed's own client
            await check.redis.aclose()
        await redis.aclose()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            if check.problem is not None:
                await check()  # not passed yet (or failed on a reconnect): ask again
            if settings.redis.cluster:
                return await cluster_ready(redis, request.app.state.settings)
            await redis.ping()
        except (RedisError, OSError) as exc:
            reason = check.problem or f"Redis is not reachable: {exc}"
            return error(503, "storage_unavailable", reason, headers={"Retry-After": RETRY_AFTER_S})
        return JSONResponse({"status": "ready"})

    unavailable = Unavailable(address(redis))
    routes = [
        Route(WEBHOOK_PATH, webhook, methods=["POST"]),  # taken by BridgeApp first
        Route(WEBHOOK_PATH + "/{tenant}", webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *links.routes(),  # auth-wrapped, before the /api mount
        *dashboard_routes(settings, listen_host),  # auth-wrapped; never on the webhook
    ]
    app = bridge_app = BridgeApp(routes=routes, lifespan=lifespan,
                                 exception_handlers={e: unavailable.answer for e in UNAVAILABLE})
    app.webhook = webhook
    app.config_path = config_path
    app.state.settings = settings
    app.state.redis = redis
    app.state.listen_host = listen_host
    return app


async def cluster_ready(redis: Redis, settings: Settings) -> Response:
    """/readyz on a cluster: every master with its state, role, memory, AOF and how many of
    the configured tenants' slots it serves (their names are for authenticated views:
    ``bridge status``, the dashboard). "ready" when every master serving slots answers,
    "degraded" (still 200: the other tenants are served) when one does not, 503 when none."""
    nodes = await cluster_nodes(redis, settings.tenant_names())
    masters = [n for n in nodes if n.role == "master" and n.slots]
    down = [n for n in masters if not n.reachable or n.failing]
    body = {"status": "ready" if not down else "degraded",
            "nodes": [{"address": n.address, "role": n.role, "reachable": n.reachable,
                       "failing": n.failing, "slots": n.slots, "tenants": len(n.tenants),
                       "master": n.master, "used_memory": n.used_memory_human,
                       "aof_enabled": n.aof_enabled,
                       "aof_last_write_status": n.aof_last_write_status} for n in nodes]}
    if masters and len(down) == len(masters):
        return JSONResponse({**body, "status": "unavailable"}, status_code=503,
                            headers={"Retry-After": RETRY_AFTER_S})
    return JSONResponse(body)


def _storage(settings: Settings, redis: Redis) -> tuple[RedisCheck, EventStore]:
    """The start-up check and the webhook's store. The webhook's script client runs the check
    on every (re)connect and waits for what it returns; until a check passes, webhooks answer
    503 and /readyz says why. On a cluster each master's script client checks its own node,
    and the process's check is the first seed's."""
    assert settings.redis_url
    if not settings.redis.cluster:
        check = RedisCheck(redis, settings.redis)
        return check, EventStore(redis, settings.redis_url, settings.webhook,
                                 settings.debounce, prepare=check, trace=settings.trace,
                                 retention=settings.retention)
    seed = seed_urls(settings.redis_url)[0]
    check = RedisCheck(redis_client(seed), settings.redis)
    scripts = ClusterScripts(cast(RedisCluster, redis), functools.partial(node_url, seed),
                             ACCEPT, lambda node: RedisCheck(node, settings.redis),
                             redis_client, keys=4)
    return check, EventStore(redis, seed, settings.webhook, settings.debounce,
                             trace=settings.trace, retention=settings.retention,
                             cluster=scripts)


def _on_hangup(app: BridgeApp) -> bool:
    """SIGHUP reloads the tenants (in the main thread's loop only: a test's app may run
    elsewhere); whether the handler is installed."""
    if app.config_path is None:
        return False
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, app.reload)
    except (RuntimeError, ValueError, NotImplementedError):
        return False
    return True


async def _migrated(redis: Redis) -> None:
    """The one-off move of a single-tenant release's keys (``bridge/migration.py``), before
    the first webhook is stored."""
    report = await migrate(redis)
    if report is not None:
        log.info("%s", report.describe())
