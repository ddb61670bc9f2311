"""Server-rendered pages. Each page polls itself with ``X-Live: 1`` and swaps in its live
block (static/dashboard.js), so figures move without a reload and without a front-end build.
Links between pages go through ``href`` so that a tenant picked with ``?tenant=`` stays picked."""

from __future__ import annotations

import datetime as dt
from importlib.resources import files
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route, Router
from starlette.staticfiles import StaticFiles

from bridge import constants as k
from bridge.clock import now_ms
from bridge.dashboard import charts
from bridge.dashboard.api import GROUP_SORTS, BadRequest, group_page_params, operations
from bridge.dashboard.auth import Answers, access, settings_of
from bridge.ops import NotFound

env = Environment(loader=PackageLoader("bridge.dashboard", "templates"),
                  autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


def duration(ms: float | None) -> str:
    if ms is None:
        return "n/a"
    ms = abs(ms)
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    if ms < 7_200_000:
        return f"{ms / 60_000:.0f} min"
    return f"{ms / 3_600_000:.1f} h"


def ago(at: int | None) -> str:
    if not at:
        return "never"
    delta = now_ms() - at
    return f"{duration(delta)} ago" if delta >= 0 else f"in {duration(delta)}"


def clock(at: int | None) -> str:
    if not at:
        return "n/a"
    return dt.datetime.fromtimestamp(at / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@pass_context
def href(context: Context, path: str, *parts: str, **query: Any) -> str:
    """``path`` with ``parts`` quoted onto it and ``query``, keeping the tenant the request
    picked with ``?tenant=``: ``href("/dashboard/groups/", name, page=2)``."""
    url = path + "".join(quote(str(part), safe="/") for part in parts)
    params = {key: value for key, value in query.items() if value is not None}
    request = context.get("request")
    if request is not None:
        params.update(access(request).query())
    return url + ("?" + urlencode(params) if params else "")


@pass_context
def tenant_field(context: Context) -> Markup:
    """A GET form's hidden ``tenant`` field, when the request picked one with ``?tenant=``."""
    request = context.get("request")
    picked = access(request).query() if request is not None else {}
    return Markup("".join(f'<input type="hidden" name="{escape(key)}" value="{escape(value)}">'
                          for key, value in picked.items()))


env.filters.update(duration=duration, ago=ago, clock=clock)
env.globals.update(chart=charts.chart, legend=charts.legend, href=href, tenant_field=tenant_field,
                   delivery_colours=charts.DELIVERY_COLOURS)


async def render(request: Request, name: str, status_code: int = 200,
                 **context: Any) -> Response:
    """The whole page, or only its live block when the page's own script asks for it."""
    template = env.get_template(name)
    problems = await operations(request).problems()
    who = access(request)
    context.update(request=request, page=name.removesuffix(".html"), now=now_ms(),
                   problem_count=problems.count, access=who,
                   # The deployment may switch tenants; a tenant's token sees only its own.
                   tenants=settings_of(request).tenant_names() if who.everyone else [])
    if request.headers.get("x-live") == "1":
        block = template.blocks["live"]
        html = "".join(block(template.new_context(context)))
    else:
        html = template.render(context)
    return HTMLResponse(html, status_code=status_code,
                        headers={"X-Problem-Count": str(context["problem_count"])})


async def overview(request: Request) -> Response:
    ops = operations(request)
    data = await ops.overview(60)
    return await render(request, "overview.html", o=data, targets=await ops.targets())


async def targets(request: Request) -> Response:
    return await render(request, "targets.html", targets=await operations(request).targets())


async def groups(request: Request) -> Response:
    """A search with ``q``; else a page of every group, as GET /api/groups lists them."""
    ops = operations(request)
    query = request.query_params.get("q", "").strip()
    if query:
        return await render(request, "groups.html", query=query,
                            found=await ops.search_groups(query))
    try:
        sort, page, per_page = group_page_params(request)
    except BadRequest as exc:
        return await render(request, "groups.html", status_code=400, query="", found=[],
                            message=str(exc))
    return await render(request, "groups.html", query="", found=[],
                        listed=await ops.list_groups(sort, page, per_page), sorts=GROUP_SORTS)


async def group(request: Request) -> Response:
    name = request.path_params["group"]
    try:
        data = await operations(request).group(name)
    except NotFound as exc:
        return await render(request, "groups.html", status_code=404, query=name, found=[],
                            message=str(exc))
    return await render(request, "group.html", g=data)


async def listing(request: Request) -> Response:
    """A listing's story (``bridge trace``): where it stands on each target, then events,
    decisions and calls, newest first."""
    ref = request.path_params["ref"]
    try:
        trace = await operations(request).trace(ref)
    except NotFound as exc:
        return await render(request, "groups.html", status_code=404, query=ref, found=[],
                            message=str(exc))
    return await render(request, "listing.html", t=trace, max_entries=k.TRACE_MAXLEN)


async def problems(request: Request) -> Response:
    return await render(request, "problems.html", p=await operations(request).problems())


async def inbox_dead(request: Request) -> Response:
    """The inbox entries the fold set aside, to retry or discard."""
    return await render(request, "inbox_dead.html", dead=await operations(request).dead_events())


class PageAnswers(Answers):
    """The pages answer in HTML: a tenant out of reach as a page that is not there, and a
    request naming no tenant (the deployment's, with no ``default`` tenant) with the list of
    tenants to pick from."""

    async def unknown(self, request: Request, name: str) -> Response:
        # The same page whether the tenant exists or not: a tenant's token learns nothing.
        return HTMLResponse(env.get_template("tenants.html").render(
            request=request, names=[], missing=name), status_code=404)

    async def missing(self, request: Request, names: list[str]) -> Response:
        return HTMLResponse(env.get_template("tenants.html").render(
            request=request, names=names, path=quote(request.url.path, safe="/")))


def static() -> StaticFiles:
    """The stylesheet and script: no tenant's (mounted ahead of the pages)."""
    return StaticFiles(directory=str(files("bridge.dashboard") / "static"))


def router() -> Router:
    return Router(routes=[
        Route("/", overview, methods=["GET"]),
        Route("/targets", targets, methods=["GET"]),
        Route("/groups", groups, methods=["GET"]),
        Route("/groups/{group:path}", group, methods=["GET"]),
        Route("/listings/{ref:path}", listing, methods=["GET"]),
        Route("/problems", problems, methods=["GET"]),
        Route("/inbox/dead", inbox_dead, methods=["GET"]),
    ])
