"""All mutable sandbox state in one object, so `reset` can replace it wholesale."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .faults import Faults
from .idempotency import IdempotencyStore
from .journal import Journal
from .ratelimit import RateLimiter
from .rentix_store import RentixStore
from .tokens import TokenStore
from .travtus_store import TravtusStore


@dataclass
class SandboxSettings:
    rentix_api_key: str = "sandbox"
    travtus_client_id: str = "sandbox"
    travtus_client_secret: str = "sandbox"
    token_ttl: int = 3600  # Travtus token lifetime, seconds
    publish_delay_s: float = 0.0  # Rentix publish job duration
    rentix_per_minute: int = 300
    rentix_bulk_per_minute: int = 30


@dataclass
class Switches:
    """Everything the admin API can change besides data."""

    rentix_api_key: str
    travtus_client_id: str
    travtus_client_secret: str
    rentix_per_minute: int
    rentix_bulk_per_minute: int
    agency_suspended: bool = False
    crm_enabled: bool = True


@dataclass
class State:
    switches: Switches
    rentix: RentixStore = field(default_factory=RentixStore)
    travtus: TravtusStore = field(default_factory=TravtusStore)
    tokens: TokenStore = field(default_factory=TokenStore)
    journal: Journal = field(default_factory=Journal)
    faults: Faults = field(default_factory=Faults)
    idempotency: IdempotencyStore = field(default_factory=IdempotencyStore)
    limiter: RateLimiter = field(default_factory=RateLimiter)


class Sandbox:
    """What every portal and the admin API hold: settings, the current state and its lock."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        # Handlers never await while they mutate state, so each runs atomically on the event
        # loop; the lock keeps that true should one ever need to await mid-operation.
        self.lock = asyncio.Lock()
        self.state = self._fresh()

    def _fresh(self) -> State:
        s = self.settings
        return State(
            Switches(
                rentix_api_key=s.rentix_api_key,
                travtus_client_id=s.travtus_client_id,
                travtus_client_secret=s.travtus_client_secret,
                rentix_per_minute=s.rentix_per_minute,
                rentix_bulk_per_minute=s.rentix_bulk_per_minute,
            )
        )

    def reset(self) -> None:
        self.state = self._fresh()
