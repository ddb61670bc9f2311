"""The sandbox portals' entry point: settings and the Starlette app mounting both portals."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount

from .admin import Admin
from .rentix import RentixApp
from .state import Sandbox, SandboxSettings
from .travtus import TravtusApp

RENTIX_ROOT = "/rentix/api/v1"
TRAVTUS_ROOT = "/travtus"
ADMIN_ROOT = "/_sandbox"


def create_app(settings: SandboxSettings | None = None) -> Starlette:
    """Both portals and the admin API, sharing one in-memory state."""
    sandbox = Sandbox(settings or SandboxSettings())
    app = Starlette(routes=[
        Mount(RENTIX_ROOT, app=RentixApp(sandbox)),
        Mount(TRAVTUS_ROOT, app=TravtusApp(sandbox)),
        Mount(ADMIN_ROOT, routes=Admin(sandbox).routes()),
    ])
    app.state.sandbox = sandbox
    return app
