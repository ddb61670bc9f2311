"""Sandbox portals: in-memory Rentix and Travtus APIs plus an admin API, for dev and tests.

Independent by design: nothing here is shared with the bridge's own adapters.
"""

from .app import SandboxSettings, create_app

__all__ = ["SandboxSettings", "create_app"]
