"""The sandbox portals' entry point: settings and the Starlette app mounting both portals."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.routing import Mount

from .admin import Admin
from .rentix import RentixApp
from .state import Sandbox
from .travtus import TravtusApp

RENTIX_ROOT = "/rentix/api/v1"
TRAVTUS_ROOT = "/travtus"
ADMIN_ROOT = "/_sandbox"


@dataclass
class SandboxSettings:
    rentix_api_key: str = "sandbox"
    travtus_client_id: str = "sandbox"
    travtus_client_secret: str = "sandbox"
    token_ttl: int = 3600  # Travtus token lifetime, seconds
    publish_delay_s: float = 0.0  # Rentix publish job duration
    rentix_per_minute: int = 300
    rentix_bulk_per_minute: int = 30


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
