"""``bridge tenant list|purge``: the tenants (agencies) one deployment serves (contract section
4a), and the data of those the configuration no longer names.

A tenant's data is every key under ``lb:{t:NAME}:`` (``bridge.tenancy.prefix``); rate buckets
belong to portal credentials and the deployment-wide keys to no tenant, so neither is counted
or purged here. Both commands read key names with SCAN (never KEYS: a big Redis stays
responsive), once over every tenant's keys for ``list``, over one tenant's for ``purge``.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import click

from bridge import tenancy
from bridge.cli.options import config_option, load, run_redis
from bridge.constants import PREFIX, keyspace
from bridge.settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

SCAN_COUNT = 1000
UNLINK_BATCH = 500
TAGGED = (PREFIX + "{t:").encode()  # what every tenant's key starts with


def register(main: click.Group) -> None:
    main.add_command(tenant)


@click.group()
def tenant() -> None:
    """The tenants (agencies) this deployment serves: list them with what each holds, and
    delete the data of one removed from the configuration."""


@dataclass(frozen=True)
class Figures:
    """What a tenant holds in Redis; held and quarantined only for a configured tenant (they
    are kept per target, and only the configuration names its targets)."""

    name: str
    configured: bool
    keys: int
    groups: int
    inbox: int
    set_aside: int
    held: int | None = None
    quarantined: int | None = None


@tenant.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def list_tenants(config_path: str | None, as_json: bool) -> None:
    """Each configured tenant with its groups, inbox, events set aside, held syncs, quarantined
    listings and keys; then the tenants with data in Redis that are not configured."""
    import orjson

    settings = load(config_path)
    found = run_redis(settings, lambda redis: survey(redis, settings))
    if as_json:
        click.echo(orjson.dumps({
            "configured": [asdict(f) for f in found if f.configured],
            "not_configured": [asdict(f) for f in found if not f.configured],
        }, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo("\n".join(render(found)))


def render(found: list[Figures]) -> list[str]:
    lines = ["configured tenants:"]
    lines += [f"  {f.name}: {_figures(f)}" for f in found if f.configured]
    others = [f for f in found if not f.configured]
    if others:
        lines.append("with data in Redis but not configured:")
        lines += [f"  {f.name}: {_figures(f)}; not configured: `bridge tenant purge {f.name}` "
                  "deletes its data" for f in others]
    return lines


def _figures(f: Figures) -> str:
    text = f"{f.groups} group(s), inbox {f.inbox}, set aside {f.set_aside}"
    if f.held is not None:
        text += f", held {f.held}, quarantined {f.quarantined}"
    return text + f", {f.keys} key(s)"


async def survey(redis: Redis, settings: Settings) -> list[Figures]:
    """The configured tenants in the configuration's order, then the others with data, by
    name."""
    keys = await keys_by_tenant(redis)
    names = settings.tenant_names()
    configured = [await figures(redis, settings.for_tenant(n), keys[n]) for n in names]
    others = [await counts(redis, n, False, keys[n]) for n in sorted(set(keys) - set(names))]
    return configured + others


async def keys_by_tenant(redis: Redis) -> Counter[str]:
    """How many keys each tenant has, by the tag of their names (one SCAN of tagged keys)."""
    found: Counter[str] = Counter()
    async for key in redis.scan_iter(match=TAGGED + b"*", count=SCAN_COUNT):
        name = _tenant_of(key)
        if name is not None:
            found[name] += 1
    return found


def _tenant_of(key: bytes) -> str | None:
    end = key.find(b"}:", len(TAGGED))
    name = key[len(TAGGED):end].decode(errors="replace") if end > 0 else ""
    return name if tenancy.valid(name) else None  # not a key the bridge wrote


async def counts(redis: Redis, name: str, configured: bool, keys: int) -> Figures:
    k = keyspace(name)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.scard(k.GROUPS)
        pipe.llen(k.INBOX)
        pipe.llen(k.INBOX_DEAD)
        groups, inbox, dead = await pipe.execute()
    return Figures(name, configured, keys, groups, inbox, dead)


async def figures(redis: Redis, settings: Settings, keys: int) -> Figures:
    """A configured tenant's counts, and its holds and quarantine as ``bridge status`` counts
    them: a change held on two targets once, a discarded quarantine entry not at all."""
    from bridge.delivery.ledger import Ledger

    base = await counts(redis, settings.tenant, True, keys)
    ledger = Ledger(redis)
    held: set[str] = set()
    quarantined = 0
    with tenancy.use(settings.tenant):
        for target in settings.targets:
            held |= set(await ledger.held(target.name))
            entries = await ledger.quarantined(target.name)
            quarantined += sum(1 for q in entries.values() if not q.discarded)
    return replace(base, held=len(held), quarantined=quarantined)


@tenant.command("purge")
@config_option
@click.option("--yes", is_flag=True,
              help="Do not ask for the tenant's name: delete at once (for scripts).")
@click.argument("name")
def purge(config_path: str | None, yes: bool, name: str) -> None:
    """Delete every key of tenant NAME, removed from the configuration first: its listings,
    ledgers, holds, stories and counters (the portals keep their listings)."""
    if not tenancy.valid(name):
        raise click.BadParameter(f"{name!r} is not a tenant name ([a-z0-9-], at most 63)",
                                 param_hint="NAME")
    settings = load(config_path)
    if name in settings.tenant_names():
        raise click.UsageError(
            f"tenant {name!r} is configured: remove it from the configuration first (and reload "
            "serve and worker, SIGHUP), so that nothing writes its data while it goes")
    count = run_redis(settings, lambda redis: count_keys(redis, name))
    if not count:
        click.echo(f"tenant {name} has no data in Redis: nothing to delete")
        return
    click.echo(f"tenant {name} has {count} key(s) in Redis (every key under "
               f"{tenancy.prefix(name)})")
    if not yes and not confirmed(name):
        click.echo("nothing deleted", err=True)
        sys.exit(1)
    deleted = run_redis(settings, lambda redis: delete_keys(redis, name))
    click.echo(f"deleted {deleted} key(s) of tenant {name}")


def confirmed(name: str) -> bool:
    typed = click.prompt(f"type the tenant's name ({name}) to delete them", default="",
                         show_default=False)
    return bool(typed.strip() == name)


def _match(name: str) -> bytes:
    """The SCAN pattern of one tenant's keys: ``{`` is no glob character, and a valid name
    has none (``*``, ``?``, ``[`` are), so it matches this tenant's keys and no other's."""
    assert tenancy.valid(name), name
    return tenancy.prefix(name).encode() + b"*"


async def count_keys(redis: Redis, name: str) -> int:
    return sum([1 async for _ in redis.scan_iter(match=_match(name), count=SCAN_COUNT)])


async def delete_keys(redis: Redis, name: str) -> int:
    """UNLINK (freed off the main thread) in batches as SCAN finds them; how many went."""
    prefix = tenancy.prefix(name).encode()
    deleted = 0
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=_match(name), count=SCAN_COUNT):
        if key.startswith(prefix):  # the pattern already ensures it; never trust one alone
            batch.append(key)
        if len(batch) >= UNLINK_BATCH:
            deleted += await redis.unlink(*batch)
            batch = []
    if batch:
        deleted += await redis.unlink(*batch)
    return deleted
