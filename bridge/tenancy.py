"""Which tenant the code at hand works for (contract section 4a).

Every key of a tenant starts ``lb:{t:NAME}:`` (``bridge.constants.Keyspace``): the hash tag keeps
all of a tenant's keys in one Redis Cluster slot, so a script never spans two tenants or two
slots. The tenant travels with the work, as a context variable set where work enters: the webhook
(its path names the tenant), a worker's job (its arguments), a tenant's turn in the scheduler, an
operator's request or command (``--tenant``, ``?tenant=``, the tenant's own token). asyncio
copies the context into every task a piece of work starts, so the whole flush of a group, say,
runs under its tenant without passing the name down through every call.

Outside any such entry the tenant is ``default`` (the one tenant of a configuration without
``[[tenants]]``): libraries, tools and tests work as they always did. The long-running processes
call ``require_explicit()`` at start: from then on, code that reaches for keys with no tenant set
is a bug and fails loudly instead of working on the default tenant's data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

DEFAULT = "default"
NAME = re.compile(r"^[a-z0-9-]{1,63}$")

_current: ContextVar[str | None] = ContextVar("lb_tenant", default=None)
_fallback: list[str | None] = [DEFAULT]


class NoTenant(LookupError):
    """Code reached for a tenant's keys outside any tenant's work (a bug)."""


def current() -> str:
    name = _current.get()
    if name is not None:
        return name
    fallback = _fallback[0]
    if fallback is None:
        raise NoTenant("no tenant set here: the code reached for a tenant's keys outside a "
                       "webhook, a job, a scheduler turn or an operator's request")
    return fallback


@contextmanager
def use(name: str) -> Iterator[str]:
    """Run the block (and the tasks it starts) for tenant ``name``."""
    token = _current.set(name)
    try:
        yield name
    finally:
        _current.reset(token)


def enter(name: str) -> None:
    """Set the tenant for the rest of the current task (a job's or a request's own task)."""
    _current.set(name)


def require_explicit(on: bool = True) -> None:
    """From now on (``on``), code with no tenant set fails instead of using ``default``."""
    _fallback[0] = None if on else DEFAULT


def tag(name: str) -> str:
    """The Redis Cluster hash tag of a tenant's keys."""
    return "{t:" + name + "}"


def prefix(name: str) -> str:
    """What every key of tenant ``name`` starts with."""
    return "lb:" + tag(name) + ":"


def valid(name: str) -> bool:
    return bool(NAME.match(name))


# (tenant, target name) -> the id of the portal credentials it calls with: rate budgets belong to
# credentials (two tenants on one Rentix API key share its 300 a minute; on two keys, never).
_credentials: dict[tuple[str, str], str] = {}


def register_credentials(credentials: dict[tuple[str, str], str]) -> None:
    """The configuration's credentials (``Settings.credentials``), replacing what was known."""
    _credentials.clear()
    _credentials.update(credentials)


def credential(tenant: str, target: str) -> str | None:
    return _credentials.get((tenant, target))
