"""Portal adapters: map canonical listings, validate them, and call Rentix and Travtus."""

from __future__ import annotations

from typing import Any

from bridge.portals.base import PortalAdapter
from bridge.portals.outcomes import Outcome, PortalError, Problem, Result
from bridge.portals.rentix import RentixAdapter
from bridge.portals.travtus import TravtusAdapter

__all__ = ["Outcome", "PortalAdapter", "PortalError", "Problem", "RentixAdapter", "Result",
           "TravtusAdapter", "build_adapter"]

ADAPTERS: dict[str, type[RentixAdapter] | type[TravtusAdapter]] = {
    "rentix": RentixAdapter,
    "travtus": TravtusAdapter,
}


def build_adapter(kind: str, **settings: Any) -> RentixAdapter | TravtusAdapter:
    """`build_adapter("rentix", name=..., base_url=..., api_key=...)`; unknown settings raise
    TypeError, so a misspelt config key is not silently ignored."""
    try:
        cls = ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"unknown portal kind {kind!r} (expected one of {sorted(ADAPTERS)})"
                         ) from None
    return cls(**settings)
