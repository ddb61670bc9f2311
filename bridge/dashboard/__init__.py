"""The operator's window: dashboard pages, the JSON API and /metrics, behind one auth check."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route, request_response

from bridge.dashboard import api, views
from bridge.dashboard.auth import Protected, require_safe_exposure
from bridge.dashboard.metrics import metrics
from bridge.settings import Settings


def dashboard_routes(settings: Settings, listen_host: str) -> list[BaseRoute]:
    """Mounted beside the webhook; the auth wrapper sits on these routes only, never on
    ``/webhooks/crm``."""
    require_safe_exposure(settings, listen_host)
    token = settings.dashboard.token
    return [
        Mount("/dashboard", app=Protected(views.router(), token)),
        Mount("/api", app=Protected(api.router(), token)),
        Route("/metrics", Protected(request_response(metrics), token), methods=["GET"]),
    ]
