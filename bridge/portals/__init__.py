"""Portal adapters: map canonical listings, validate them, and call Rentix and Travtus."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

from bridge.portals.base import PortalAdapter
from bridge.portals.outcomes import Outcome, PortalError, Problem, Result
from bridge.portals.readback import FieldDifference, Pace
from bridge.portals.rentix import RentixAdapter
from bridge.portals.travtus import TravtusAdapter

if TYPE_CHECKING:
    from bridge.settings import RentixTarget, Settings, TravtusTarget

__all__ = ["FieldDifference", "Outcome", "Pace", "PortalAdapter", "PortalError", "Problem",
           "RentixAdapter", "Result", "TravtusAdapter", "adapter_for", "adapters_for",
           "build_adapter"]

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


@overload
def adapter_for(target: RentixTarget) -> RentixAdapter: ...
@overload
def adapter_for(target: TravtusTarget) -> TravtusAdapter: ...
def adapter_for(target: RentixTarget | TravtusTarget) -> RentixAdapter | TravtusAdapter:
    """The adapter for one configured target: the one place settings become an adapter."""
    if target.kind == "rentix":
        return RentixAdapter(target.name, target.base_url, target.api_key,
                             deletion_behaviour=target.delete_behaviour)
    return TravtusAdapter(target.name, target.base_url, target.token_url, target.client_id,
                          target.client_secret)


def adapters_for(settings: Settings) -> dict[str, RentixAdapter | TravtusAdapter]:
    return {target.name: adapter_for(target) for target in settings.targets}
