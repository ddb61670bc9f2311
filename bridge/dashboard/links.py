"""The linking web API (for the dashboard): the same actions as ``bridge link``.

    POST   /api/links                       {target?, portal_id, external_ref}
    DELETE /api/links/{target}/{portal_id}
    POST   /api/links/{target}/scan         {apply?, min_confidence?}
    GET    /api/adoption/{target}
    POST   /api/adoption/{target}/end

Failures answer ``{"error": {"type", "message"}}``; the message says what to do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, request_response

from bridge.dashboard.api import tenant_settings
from bridge.dashboard.auth import Protected, is_json
from bridge.linking.matching import DEFAULT_MIN_CONFIDENCE
from bridge.linking.service import LinkError, Linking
from bridge.responses import JSONResponse, error

Handler = Callable[[Request, Linking], Awaitable[Any]]


def _endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        linking = Linking(request.app.state.redis, tenant_settings(request))
        try:
            return JSONResponse(await handler(request, linking))
        except LinkError as exc:
            return error(exc.status, exc.type, exc.message)

    return endpoint


async def _body(request: Request) -> dict[str, Any]:
    # Only JSON: no plain HTML form on another site can send it (``Protected`` checks it too).
    if not is_json(request.headers.get("content-type", "")):
        raise LinkError("invalid_request",
                        "send a JSON object with Content-Type: application/json")
    raw = await request.body()
    try:
        value = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise LinkError("invalid_request", "the body must be JSON") from None
    if not isinstance(value, dict):
        raise LinkError("invalid_request", "the body must be a JSON object")
    return value


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        raise LinkError("invalid_request", f"{name} is required ({_kind_name(kind)})")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return "a number" if kind in (int, (int, float)) else "a string"


def _portal_id(text: str) -> int:
    if not text.isdigit():
        raise LinkError("invalid_request", "the portal ID is a number")
    return int(text)


async def add_link(request: Request, linking: Linking) -> Any:
    body = await _body(request)
    result = await linking.link(body.get("target"), _field(body, "portal_id", int),
                                _field(body, "external_ref", str))
    return result.as_dict()


async def remove_link(request: Request, linking: Linking) -> Any:
    params = request.path_params
    result = await linking.unlink(params["target"], _portal_id(params["portal_id"]))
    return result.as_dict()


async def scan(request: Request, linking: Linking) -> Any:
    body = await _body(request)
    apply = body.get("apply", False)
    if not isinstance(apply, bool):
        raise LinkError("invalid_request", "apply is true or false")
    confidence = body.get("min_confidence", DEFAULT_MIN_CONFIDENCE)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise LinkError("invalid_request", "min_confidence is a number above 0, at most 1")
    # No report files from the web process: the answer is the report.
    result = await linking.scan(request.path_params["target"], apply=apply,
                                min_confidence=float(confidence))
    return result.as_dict()


async def adoption(request: Request, linking: Linking) -> Any:
    return await linking.adoption_status(request.path_params["target"])


async def end_adoption(request: Request, linking: Linking) -> Any:
    await _body(request)  # nothing to read, but an action takes JSON like every other
    return await linking.end_adoption(request.path_params["target"])


def routes() -> list[Route]:
    """The linking routes behind the dashboard's auth, for the request's tenant. Mount them
    before the dashboard's ``/api``, whose catch-all would answer first. The tokens are read
    from the app's settings at each request."""
    table: list[tuple[str, Handler, str]] = [
        ("/api/links", add_link, "POST"),
        ("/api/links/{target}/{portal_id}", remove_link, "DELETE"),
        ("/api/links/{target}/scan", scan, "POST"),
        ("/api/adoption/{target}", adoption, "GET"),
        ("/api/adoption/{target}/end", end_adoption, "POST"),
    ]
    return [Route(path, Protected(request_response(_endpoint(handler))), methods=[method])
            for path, handler, method in table]
