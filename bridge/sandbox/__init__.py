"""Sandbox portals: in-memory Rentix and Travtus APIs plus an admin API, for dev and tests.

Independent by design: nothing here is shared with the bridge's own adapters.
"""

from .app import create_app
from .state import SandboxSettings

__all__ = ["SandboxSettings", "create_app"]
