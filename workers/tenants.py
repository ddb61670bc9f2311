"""What a worker holds for each tenant: its settings view, its portal clients, and the services
built on them, made the first time the tenant has work (a deployment of 1,000 tenants, most of
them quiet, holds clients only for the ones that are not).

A reload (SIGHUP) swaps the configuration: a tenant whose settings changed gets new services
from its next job or turn on, while a job already running finishes with what it started with;
the clients it leaves behind are closed once every job has had time to end (the job timeout).
A tenant no longer configured has no runtime: its jobs and turns do nothing (its data stays in
Redis until ``bridge tenant purge``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from redis.asyncio import Redis

from bridge import tenancy
from bridge.delivery import Delivery
from bridge.ingest.inbox import Inbox
from bridge.portals import RentixAdapter, TravtusAdapter, adapters_for
from bridge.reconcile.records import Records
from bridge.reconcile.service import Reconciler
from bridge.settings import Settings

log = logging.getLogger("workers.tenants")


@dataclass
class Runtime:
    """One tenant's services in this worker."""

    tenant: str
    settings: Settings  # the tenant's view (Settings.for_tenant)
    adapters: dict[str, RentixAdapter | TravtusAdapter]
    delivery: Delivery
    reconciler: Reconciler
    records: Records
    inbox: Inbox
    jobs: int = field(default=0)  # running now: a retired runtime closes once none is

    async def aclose(self) -> None:
        for adapter in self.adapters.values():
            await adapter.aclose()


class Runtimes:
    """The configured tenants' runtimes, made on first use."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._names = frozenset(settings.tenant_names())
        self._made: dict[str, Runtime] = {}
        self._retired: list[Runtime] = []

    @property
    def names(self) -> frozenset[str]:
        return self._names

    def get(self, tenant: str) -> Runtime | None:
        """The tenant's runtime; None when it is not configured (any more)."""
        runtime = self._made.get(tenant)
        if runtime is None and tenant in self._names:
            runtime = self._made[tenant] = self._make(tenant)
        return runtime

    def _make(self, tenant: str) -> Runtime:
        view = self.settings.for_tenant(tenant)
        with tenancy.use(tenant):  # anything a service names at construction is the tenant's
            adapters = adapters_for(view)
            delivery = Delivery(self.redis, view, adapters)
            return Runtime(tenant, view, adapters, delivery,
                           Reconciler(self.redis, view, adapters, delivery),
                           Records(self.redis), Inbox(self.redis, view))

    def reload(self, settings: Settings) -> None:
        """Serve ``settings`` from now on; runtimes of changed or removed tenants retire."""
        old, self.settings = self.settings, settings
        self._names = frozenset(settings.tenant_names())
        for tenant, runtime in list(self._made.items()):
            if tenant not in self._names or old.for_tenant(tenant) != settings.for_tenant(tenant):
                del self._made[tenant]
                self._retired.append(runtime)
        asyncio.get_running_loop().create_task(self._close_retired())

    async def _close_retired(self) -> None:
        """Close what retired runtimes hold once their running jobs have ended."""
        deadline = asyncio.get_running_loop().time() + self.settings.delivery.job_timeout_s
        while self._retired:
            for runtime in [r for r in self._retired if not r.jobs]:
                self._retired.remove(runtime)
                await runtime.aclose()
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(1)

    async def aclose(self) -> None:
        for runtime in [*self._made.values(), *self._retired]:
            with contextlib.suppress(Exception):  # closing clients on the way out
                await runtime.aclose()
        self._made.clear()
        self._retired.clear()
