"""The JSON API (documented in docs/api.md): the same reads and actions as the pages and the
CLI, all through ``bridge.ops``. Bad input answers 400/404 and changes nothing. The read models
are dataclasses; orjson writes them as the documented JSON objects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, cast, get_args

import orjson
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from bridge import tenancy
from bridge.dashboard.auth import is_json, settings_of
from bridge.ops import HeldSyncChanged, NotFound, OperationError, Operations
from bridge.ops.models import GroupSort
from bridge.responses import JSONResponse, error
from bridge.settings import Settings

Handler = Callable[[Request], Awaitable[Response]]
GROUP_SORTS: tuple[str, ...] = get_args(GroupSort)


class BadRequest(Exception):
    pass


def tenant_settings(request: Request) -> Settings:
    """The request's tenant's view of the settings the request started with: its targets,
    guard and debounce."""
    return settings_of(request).for_tenant(tenancy.current())


class TenantOperations:
    """Each tenant's Operations under one configuration, made on first use: the portal adapters
    a group view maps listings with are built once per process, not on every poll (nothing is
    ever sent with them, so dropping them with a replaced configuration leaves nothing open)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.by_tenant: dict[str, Operations] = {}

    def of(self, redis: Redis, tenant: str) -> Operations:
        ops = self.by_tenant.get(tenant)
        if ops is None:
            ops = self.by_tenant[tenant] = Operations(redis, self.settings.for_tenant(tenant))
        return ops


def operations(request: Request, tenant: str | None = None) -> Operations:
    """The Operations of ``tenant`` (default: the request's); run it under that tenant."""
    state, settings = request.app.state, settings_of(request)
    cache: TenantOperations | None = getattr(state, "operations", None)
    if cache is None or cache.settings is not settings:  # SIGHUP replaced the settings
        cache = state.operations = TenantOperations(settings)
    return cache.of(state.redis, tenant or tenancy.current())


def answers_errors(handler: Handler) -> Handler:
    """Map operator errors to the bridge's error body."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            return error(400, "invalid_request", str(exc))
        except NotFound as exc:
            return error(404, "not_found", str(exc))
        except HeldSyncChanged as exc:
            return error(409, "held_sync_changed", str(exc), held=asdict(exc.current))
        except OperationError as exc:
            return error(400, "not_possible", str(exc))

    return wrapped


async def json_body(request: Request) -> dict[str, Any]:
    # Requiring a JSON content type also keeps other sites' plain forms from posting here.
    if not is_json(request.headers.get("content-type", "")):
        raise BadRequest("send a JSON object with Content-Type: application/json")
    raw = await request.body()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def text_field(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name!r} must be a non-empty string")
    return value


def pairs(body: dict[str, Any], second: str) -> list[tuple[str, str]]:
    """``{"items": [{"target", second}, ...]}`` as (target, second) pairs."""
    items = body.get("items")
    if not isinstance(items, list) or not items:
        raise BadRequest(f"'items' must be a non-empty list of {{\"target\", \"{second}\"}}")
    for item in items:
        if not isinstance(item, dict):
            raise BadRequest(f"each item must be an object with 'target' and '{second}'")
    return [(text_field(i, "target"), text_field(i, second)) for i in items]


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name!r} must be a whole number, found {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name!r} must be between {low} and {high}, found {value}")
    return value


# -- reads --

@answers_errors
async def overview(request: Request) -> Response:
    minutes = int_param(request, "minutes", 60, 1, 120)
    return JSONResponse(await operations(request).overview(minutes))


@answers_errors
async def targets(request: Request) -> Response:
    return JSONResponse({"targets": await operations(request).targets()})


@answers_errors
async def groups(request: Request) -> Response:
    """A search with ``q``; else one page of every group (``sort``, ``page``, ``per_page``)."""
    query = request.query_params.get("q")
    if query is not None:
        if not query.strip():
            raise BadRequest("'q' must name a group (or part of one) or a listing's external "
                             "ref; leave it out to list every group")
        return JSONResponse({"groups": await operations(request).search_groups(query)})
    sort, page, per_page = group_page_params(request)
    return JSONResponse(await operations(request).list_groups(sort, page, per_page))


def group_page_params(request: Request) -> tuple[GroupSort, int, int]:
    """The list's ``sort`` (default name), ``page`` (from 1) and ``per_page`` (1 to 200)."""
    sort = request.query_params.get("sort", "name")
    if sort not in GROUP_SORTS:
        raise BadRequest(f"'sort' must be one of {', '.join(GROUP_SORTS)}, found {sort!r}")
    return (cast(GroupSort, sort), int_param(request, "page", 1, 1, 1_000_000),
            int_param(request, "per_page", 50, 1, 200))


@answers_errors
async def group(request: Request) -> Response:
    history = int_param(request, "history", 50, 0, 200)
    return JSONResponse(await operations(request).group(request.path_params["group"], history))


@answers_errors
async def listing_trace(request: Request) -> Response:
    return JSONResponse(await operations(request).trace(request.path_params["ref"]))


@answers_errors
async def problems(request: Request) -> Response:
    return JSONResponse(await operations(request).problems())


@answers_errors
async def drift(request: Request) -> Response:
    return JSONResponse({"drift": await operations(request).drift()})


@answers_errors
async def status(request: Request) -> Response:
    return JSONResponse(await operations(request).status())


# -- actions --

@answers_errors
async def pause(request: Request) -> Response:
    body = await json_body(request)
    reason = text_field(body, "reason", "paused by an operator (dashboard)")
    name = request.path_params["target"]
    await operations(request).pause(name, reason)
    return JSONResponse({"target": name, "state": "paused", "reason": reason})


@answers_errors
async def resume(request: Request) -> Response:
    await json_body(request)
    name = request.path_params["target"]
    await operations(request).resume(name)
    return JSONResponse({"target": name, "state": "active"})


@answers_errors
async def pause_tenant(request: Request) -> Response:
    """Pause every target of the request's tenant."""
    body = await json_body(request)
    reason = text_field(body, "reason", "tenant paused by an operator (dashboard)")
    paused = await operations(request).pause_every_target(reason)
    return JSONResponse({"tenant": tenancy.current(), "state": "paused", "reason": reason,
                         "targets": paused})


@answers_errors
async def resume_tenant(request: Request) -> Response:
    """Resume every target of the request's tenant."""
    await json_body(request)
    resumed = await operations(request).resume_every_target()
    return JSONResponse({"tenant": tenancy.current(), "state": "active", "targets": resumed})


@answers_errors
async def held_release(request: Request) -> Response:
    body = await json_body(request)
    held = await operations(request).release(optional_target(body),
                                             text_field(body, "group"),
                                             text_field(body, "digest"))
    return JSONResponse({"released": held})


@answers_errors
async def held_discard(request: Request) -> Response:
    body = await json_body(request)
    held = await operations(request).discard(optional_target(body),
                                             text_field(body, "group"),
                                             text_field(body, "digest"))
    return JSONResponse({"discarded": held})


async def held(request: Request) -> Response:
    """Each group's held change once, with the targets it holds (``?group=`` for one)."""
    return JSONResponse({"held": await operations(request).held_changes(
        request.query_params.get("group") or None)})


def optional_target(body: dict[str, Any]) -> str | None:
    """A held change's target when one is named; else every target that holds it."""
    return None if body.get("target") is None else text_field(body, "target")


@answers_errors
async def quarantine_retry(request: Request) -> Response:
    items = pairs(await json_body(request), "ref")
    return JSONResponse({"retried": await operations(request).retry_many(items)})


@answers_errors
async def quarantine_discard(request: Request) -> Response:
    items = pairs(await json_body(request), "ref")
    return JSONResponse({"discarded": await operations(request).discard_many(items)})


async def inbox_dead(request: Request) -> Response:
    """The inbox entries the fold set aside (lb:inbox:dead), the first set aside first."""
    return JSONResponse({"dead": await operations(request).dead_events()})


def dead_ids(body: dict[str, Any]) -> list[str] | None:
    """``{"ids": [...]}`` names entries set aside; ``{"all": true}`` takes every one."""
    if body.get("all") is True:
        return None
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise BadRequest("send 'ids': a non-empty list of ids from GET /api/inbox/dead, "
                         "or 'all': true")
    return ids


@answers_errors
async def inbox_dead_retry(request: Request) -> Response:
    ids = dead_ids(await json_body(request))
    return JSONResponse({"retried": await operations(request).retry_dead(ids)})


@answers_errors
async def inbox_dead_discard(request: Request) -> Response:
    ids = dead_ids(await json_body(request))
    return JSONResponse({"discarded": await operations(request).discard_dead(ids)})


async def unknown(request: Request) -> Response:
    return error(404, "not_found", f"no API endpoint {request.method} {request.url.path}; "
                 "see docs/api.md")


def router() -> Router:
    return Router(routes=[
        Route("/overview", overview, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
        Route("/targets", targets, methods=["GET"]),
        Route("/targets/{target}/pause", pause, methods=["POST"]),
        Route("/targets/{target}/resume", resume, methods=["POST"]),
        Route("/tenant/pause", pause_tenant, methods=["POST"]),
        Route("/tenant/resume", resume_tenant, methods=["POST"]),
        Route("/groups", groups, methods=["GET"]),
        Route("/groups/{group:path}", group, methods=["GET"]),
        Route("/listings/{ref:path}/trace", listing_trace, methods=["GET"]),
        Route("/problems", problems, methods=["GET"]),
        Route("/drift", drift, methods=["GET"]),
        Route("/held", held, methods=["GET"]),
        Route("/held/release", held_release, methods=["POST"]),
        Route("/held/discard", held_discard, methods=["POST"]),
        Route("/quarantine/retry", quarantine_retry, methods=["POST"]),
        Route("/quarantine/discard", quarantine_discard, methods=["POST"]),
        Route("/inbox/dead", inbox_dead, methods=["GET"]),
        Route("/inbox/dead/retry", inbox_dead_retry, methods=["POST"]),
        Route("/inbox/dead/discard", inbox_dead_discard, methods=["POST"]),
        Route("/{rest:path}", unknown),
    ])
