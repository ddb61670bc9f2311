"""The operator's window: dashboard pages, the JSON API and /metrics, behind one auth check
that also decides the tenant each request is for (``bridge.dashboard.auth``)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route, request_response

from bridge.dashboard import api, views
from bridge.dashboard.auth import Protected, require_safe_exposure
from bridge.dashboard.metrics import metrics
from bridge.settings import Settings


def dashboard_routes(settings: Settings, listen_host: str) -> list[BaseRoute]:
    """Mounted beside the webhook; the auth wrapper sits on these routes only, never on
    ``/webhooks/crm``. ``settings`` is checked here; requests read the app's settings of the
    moment (``app.state.settings``), which a SIGHUP replaces."""
    require_safe_exposure(settings, listen_host)
    return [
        # Before /dashboard: the stylesheet and script belong to no tenant.
        Mount("/dashboard/static", app=Protected(views.static(), every_tenant=True)),
        Mount("/dashboard", app=Protected(views.router(), views.PageAnswers())),
        Mount("/api", app=Protected(api.router())),
        Route("/metrics", Protected(request_response(metrics), every_tenant=True),
              methods=["GET"]),
    ]
